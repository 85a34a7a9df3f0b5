"""Configs of the recycling stage: the teacher, the student's IFD statistics, the gate."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from selectune.core.config import FIDELITY_HELP, BatchedScoring, Config, EngineChoice, Fidelity, ModelOptions
from selectune.core.models import DEFAULT_STUDENT, DEFAULT_TEACHER


class TeacherConfig(ModelOptions, EngineChoice):
    """The reflecting teacher: a local model (transformers or vLLM) or any OpenAI-compatible endpoint."""

    runtime: ClassVar[tuple[str, ...]] = ("batch_size", "concurrency", "timeout_s", "max_retries", "api_key_env",
                                          "api_key_secret")

    backend: Literal["hf", "vllm", "openai"] = Field("hf", description="hf: local transformers model; vllm: local "
                                                     "vLLM engine (CUDA GPU, pip install 'selectune[vllm]'); "
                                                     "openai: OpenAI-compatible API")
    model: str = Field(DEFAULT_TEACHER, description="Alias/path/hub id (hf, vllm) or the served model name")
    base_url: str | None = Field(None, description="openai: endpoint, e.g. http://127.0.0.1:8000/v1")
    api_key_env: str = Field("OPENAI_API_KEY", description="openai: environment variable holding the key")
    api_key_secret: str | None = Field(None, description="openai: Prefect Secret block name holding the key "
                                       "(used when the environment variable is unset)")
    temperature: float = Field(0.0, ge=0, description="Sampling temperature (0 = greedy, as official)")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling (1 = off, as official)")
    max_new_tokens: int = Field(512, ge=1, description="Max tokens per teacher reply (official: 2048); a reply cut "
                                "off by it is a parse failure, never a rewrite")
    prefill: bool = Field(True, description="hf, vllm: write each part's opening marker into the assistant turn and "
                          "stop at its closing marker or the end of the turn, so a small model only writes the content "
                          "(the markers written for it are kept in the raw reply; max_new_tokens then limits each "
                          "part); openai: not used")
    repetition_penalty: float | None = Field(None, ge=1.0, description="hf, vllm: penalize tokens the reply "
                                             "already wrote (vllm: the prompt's too; 1 = off); default 1.2 for models "
                                             "under 1B parameters, which loop without it, else 1")
    seed: int = Field(0, description="Sampling seed")
    batch_size: int = Field(16, ge=1, description="hf: prompts per generate() call")
    concurrency: int = Field(8, ge=1, description="openai: requests in flight")
    timeout_s: float = Field(120.0, gt=0, description="openai: per-request timeout")
    max_retries: int = Field(6, ge=0, description="openai: retries on 429/5xx/timeouts/connection errors")
    max_calls: int | None = Field(None, ge=0, description="Stop cleanly after this many new (uncached) calls")
    max_cost: float | None = Field(None, ge=0, description="Stop cleanly when the estimated cost reaches this")
    prices: dict[str, float] | None = Field(None, description="USD per 1M tokens: {input: x, output: y}")


class IFDConfig(BatchedScoring):
    """Student statistics: IFD = ppl(A|Q)/ppl(A) and reversed IFD = ppl(Q|A')/ppl(Q) (arXiv 2402.10110)."""

    renamed: ClassVar[dict[str, str]] = {"max_length": "max_tokens"}
    # github.com/tianyi-lab/Reflection_Tuning selection_code/data_analysis.py: --prompt vicuna, --max_length 2048
    official: ClassVar[dict[str, object]] = {"template": "vicuna", "max_tokens": 2048}
    fidelity: Fidelity = Field("selectune", description=FIDELITY_HELP + "; official also scores s(Q) and "
                               "s(Q|A') on instruction + input with no separator, as the released code does")
    model: str = Field(DEFAULT_STUDENT, description="The student: the model the user will tune")
    template: Literal["alpaca", "vicuna", "chat"] = Field("alpaca", description="Prompt template around Q "
                                                          "(official: vicuna)")


class IFDScoringConfig(IFDConfig):
    """IFD / reversed IFD of every scored record, added as columns (``ifd``, ``rifd``, ...) to rank by, e.g. Cherry
    LLM's selection: ``selection: {by: ifd, score_below: 1.0}``."""

    runtime: ClassVar[tuple[str, ...]] = (*IFDConfig.runtime, "enabled", "use_cache")

    enabled: bool = Field(False, description="Score every record's IFD after SelectIT, in the pipeline flow")
    use_cache: bool = Field(True, description="Reuse IFD statistics from the content-addressed cache")


class ReflectionPrompts(Config):
    """The teacher's prompt files: Jinja templates defining the macros ``system()`` and ``user(instruction, input,
    answer)``, checked when the config loads; the project-written ones by default. A file's text is part of every
    teacher cache key and of the stage's key, so a new prompt never reuses old replies."""

    paths: ClassVar[tuple[str, ...]] = ("reflect_instruction", "reflect_response")
    reflect_instruction: str | None = Field(None, description="Instruction reflection prompt file; its reply must "
                                            "hold [New Instruction] ... [End] and [New Answer] ... [End]")
    reflect_response: str | None = Field(None, description="Response reflection prompt file; its reply must hold "
                                         "[Better Answer] ... [End]")

    @model_validator(mode="after")
    def _files_define_the_macros(self) -> ReflectionPrompts:
        from selectune.core.prompts import load_prompt_file
        from selectune.reflection.prompts import MACROS

        for path in (self.reflect_instruction, self.reflect_response):
            if path:
                load_prompt_file(path, MACROS)
        return self


class ReflectionConfig(Config):
    """Selective Reflection-Tuning recycling (arXiv 2402.10110): teacher rewrites kept when the student's
    IFD / reversed-IFD say they help."""

    # github.com/tianyi-lab/Reflection_Tuning: reflection_code/*.py (temperature 0, top_p 1, max_tokens 2048, one
    # retry of an unusable reply), selection_code/get_select_data.py (only qa and a pairs written)
    runtime: ClassVar[tuple[str, ...]] = ("enabled", "trace_calls")
    official: ClassVar[dict[str, object]] = {"parse_retries": 1, "student": {"fidelity": "official"},
                                             "teacher": {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 2048,
                                                         "prefill": False, "repetition_penalty": 1.0}}
    fidelity: Fidelity = Field("selectune", description=FIDELITY_HELP + "; official keeps only the qa and a pairs "
                               "(the released selection script's other two appends are commented out)")
    enabled: bool = Field(False, description="Run the recycling stage in the pipeline flow")
    parse_retries: int = Field(0, ge=0, description="Ask again after an unusable reply (official: 1); never for a "
                               "greedy local teacher, which would write the same reply")
    order: Literal["before_scoring", "after_scoring"] = Field("before_scoring", description="Recycle every "
                                                              "record before SelectIT, or score first and "
                                                              "recycle the top part")
    top_fraction: float = Field(1.0, gt=0, le=1, description="after_scoring: recycle this top fraction")
    limit: int | None = Field(None, ge=1, description="Recycle at most N records (smoke runs, budgets)")
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    prompts: ReflectionPrompts = Field(default_factory=ReflectionPrompts)
    trace_calls: bool = Field(True, description="One MLflow trace span per new teacher call (messages, reply, "
                              "latency, tokens, retries, parse outcome; never the key) when the stage runs in an "
                              "MLflow run")
    student: IFDConfig = Field(default_factory=IFDConfig)
    ifd_max: float = Field(1.0, gt=0, description="Keep the chosen pair only when IFD < this")
    rifd_max: float = Field(1.0, gt=0, description="Keep the chosen pair only when r-IFD < this")
    keep_regardless: bool = Field(False, description="Keep the chosen pair even when the thresholds fail")
