"""Config of the Self-J judge stage."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from selectune.core.config import BACKEND_HELP, FIDELITY_HELP, Config, EngineChoice, Fidelity, LoRATraining
from selectune.core.models import DEFAULT_EMBEDDER, DEFAULT_STUDENT


class JudgePrompts(Config):
    """The judge's prompt files: Jinja templates defining a macro ``prompt(question, answer, reference)`` (with the
    reference) or ``prompt(question, answer)`` (reference-free), checked when the config loads; the project's
    paraphrases of the official prompts by default. The trained judge keeps their text with its adapter."""

    paths: ClassVar[tuple[str, ...]] = ("with_reference", "without_reference")
    with_reference: str | None = Field(None, description="Prompt file of the with-reference rating")
    without_reference: str | None = Field(None, description="Prompt file of the reference-free rating")

    @model_validator(mode="after")
    def _files_define_the_macro(self) -> JudgePrompts:
        from selectune.judge.prompts import prompt_texts

        prompt_texts(self)
        return self


class JudgeConfig(LoRATraining, EngineChoice):
    """Self-J (arXiv 2409.00935): a judge trained without human labels. The model under evaluation samples
    responses, rates them 0-9 against the gold reference, and the rating is recalibrated by the cosine to the
    reference; a LoRA judge learns to predict the label with and without the reference (self-distillation)."""

    renamed: ClassVar[dict[str, str]] = {"max_length": "max_tokens", "alpha": "ref_free_weight",
                                         "beta": "kl_weight"}
    runtime: ClassVar[tuple[str, ...]] = (*LoRATraining.runtime, "enabled", "score_batch_size", "max_batch_tokens")
    # github.com/nusnlp/Self-J bash/finetune.kd.sh (+ finetune.kd.py, kd.py): LoRA r 16, alpha 16, dropout 0.05 on
    # q/k/v/o, lr 3e-4, 2 epochs, linear decay after 100 warm-up steps, 128 pairs per step (16 x 8), cutoff 1024,
    # loss weights 0.3 (reference-free CE) and 2 (KL)
    official: ClassVar[dict[str, object]] = {
        "lora_r": 16, "lora_alpha": 16, "lora_dropout": 0.05,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
        "learning_rate": 3e-4, "epochs": 2.0, "lr_scheduler": "linear", "warmup_steps": 100, "batch_size": 16,
        "grad_accum": 8, "max_tokens": 1024, "ref_free_weight": 0.3, "kl_weight": 2.0}
    fidelity: Fidelity = Field("selectune", description=FIDELITY_HELP + "; official: the released training "
                               "script's hyper-parameters (finetune.kd.sh)")
    enabled: bool = Field(False, description="Run the judge stage in the pipeline flow (after tuning)")
    model: str | None = Field(None, description="Model under evaluation: alias, folder, adapter folder or "
                              "models:/NAME/VERSION; default the tuned model of the tune stage")
    base: str = Field(DEFAULT_STUDENT, description="Judge base model (LoRA-tuned into the judge); the tune "
                      "stage's base by default")
    template: Literal["auto", "alpaca", "chat"] = Field("auto", description="Prompt template around the judge "
                                                        "prompt (auto as in tune)")
    backend: Literal["hf", "vllm"] = Field("hf", description="Engine sampling the responses of the model under "
                                           "evaluation (the judge itself trains with transformers); " + BACKEND_HELP)
    n_samples: int = Field(4, ge=1, description="Responses sampled per instruction from the model under evaluation")
    temperature: float = Field(0.7, gt=0, description="Sampling temperature of those responses")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling of those responses")
    max_new_tokens: int = Field(128, ge=1, description="Max tokens per sampled response")
    seed: int = Field(0, description="Seed of sampling, of the held-out split and of training")
    lambda_cos: float = Field(0.5, ge=0, le=1, description="Label = (1 - lambda) * self-eval + lambda * 9 * "
                              "max(cosine, 0)")
    embedder: str = Field(DEFAULT_EMBEDDER, description="Sentence embedder for the response-reference cosine")
    ref_free_weight: float = Field(0.3, ge=0, description="Loss weight of the reference-free cross-entropy "
                                   "(official: alpha = 0.3 in kd.py)")
    kl_weight: float = Field(2.0, ge=0, description="Loss weight of KL(p_with-ref || p_ref-free), the "
                             "self-distillation (official: alpha_for_kd = 2 in kd.py)")
    lora_r: int = Field(8, ge=1, description="LoRA rank (official: 16, finetune.kd.sh; 8 is only the default of "
                        "its Python function)")
    lora_alpha: int = Field(16, ge=1, description="LoRA scaling numerator (official: 16)")
    max_tokens: int = Field(768, ge=64, description="Token limit per judge prompt, the answer's end is cut "
                            "(official cutoff_len: 1024)")
    epochs: float = Field(3.0, gt=0, description="Training epochs over the labelled pairs (official: 2)")
    learning_rate: float = Field(3e-4, gt=0, description="Peak learning rate (official: 3e-4)")
    batch_size: int = Field(4, ge=1, description="Pairs per micro-batch, each pair two prompts (official: 16, with "
                            "grad_accum 8)")
    eval_fraction: float = Field(0.2, gt=0, lt=1, description="Instructions held out (with all their samples) "
                                 "for the correlation and coverage evaluation")
    threshold: float = Field(5.0, ge=0, le=9, description="Selective instruction following: decline when the "
                             "judge score is below this")
    score_batch_size: int = Field(16, ge=1, description="Max prompts per forward pass (scoring) or generate() "
                                  "call (sampling)")
    max_batch_tokens: int | None = Field(None, ge=64, description="Max padded tokens per scoring pass; default "
                                         "4096 on CPU, sized to free GPU memory on a GPU")
    prompts: JudgePrompts = Field(default_factory=JudgePrompts)
    register_as: str | None = Field("selectune-judge", description="MLflow Model Registry name (None: skip)")
