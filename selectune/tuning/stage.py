"""Stage 4: LoRA instruction tuning on the selected subset, evaluation, and the Model Registry entry."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from selectune.core.digests import file_digest
from selectune.data.records import subset_digest
from selectune.stage import StageResult, run_stage
from selectune.tracking import runs
from selectune.tuning.config import TuneConfig


@dataclass(frozen=True)
class TuneOutputs:
    adapter: Path  # the LoRA adapter folder (safetensors, tokenizer, selectune.json)
    checkpoints: Path
    eval: Path  # metrics.json and generations.jsonl
    merged: Path | None = None  # the merged model (tune.merge)
    model_uri: str | None = None  # models:/NAME/VERSION when registered


def tune_stage(cfg: TuneConfig, selected: str | Path, run_dir: str | Path, parent_run_id: str | None = None,
               dataset_digest: str | None = None) -> StageResult[TuneOutputs]:
    """Train a LoRA adapter on ``selected`` into ``<run_dir>/tune/`` (adapter/, checkpoints/, eval/), evaluate base
    vs tuned, and with a parent MLflow run log the adapter and register it as ``cfg.register_as``
    (output ``model_uri``). A killed run resumes from its last checkpoint when re-run."""
    from selectune.core import models
    from selectune.data.records import text_digest

    inputs = {"selected": text_digest(selected), "base": models.fingerprint(cfg.base)}
    if cfg.heldout:
        inputs["heldout"] = file_digest(cfg.heldout)

    def body(out: Path) -> tuple[TuneOutputs, dict[str, float]]:
        from selectune.tuning import evaluate, train

        res = train.train(cfg, selected, out)
        ev = evaluate.evaluate(res.model, res.tokenizer, res.heldout, res.template, cfg.max_tokens,
                               cfg.eval_prompts, cfg.max_new_tokens, out / "eval")
        model_uri = None
        metrics = {**res.metrics, **ev.metrics}
        if parent_run_id:
            import mlflow

            digest = dataset_digest or subset_digest(selected)
            train_digest = runs.log_dataset(res.train, selected, "tune_train", "training")
            if len(res.heldout):
                runs.log_dataset(res.heldout, cfg.heldout or selected, "tune_heldout", "evaluation")
            mlflow.log_params(runs.clean_params({"tune.template_used": res.template,
                                                     "tune.target_modules_used": ",".join(res.target_modules)}))
            mlflow.log_artifacts(str(res.adapter_dir), "adapter")
            if len(ev.table):
                mlflow.log_table(ev.table, "eval/generations.json")
            if cfg.register_as:
                from selectune.tracking import registry

                tags = {"selectune.base": cfg.base, "selectune.base_fingerprint": inputs["base"],
                        "selectune.selected_digest": digest, "selectune.data_path": str(Path(selected).resolve()),
                        "selectune.template": res.template, "selectune.run_dir": str(out.parent),
                        "selectune.dataset.training": train_digest}
                if "eval.tuned_loss" in ev.metrics:
                    tags["selectune.eval_loss"] = str(ev.metrics["eval.tuned_loss"])
                start = time.perf_counter()
                model_uri = registry.log_and_register(res.adapter_dir, cfg.register_as, tags)
                metrics["register_seconds"] = round(time.perf_counter() - start, 3)
        return TuneOutputs(res.adapter_dir, out / "checkpoints", out / "eval", res.merged_dir, model_uri), metrics

    return run_stage("tune", run_dir, cfg, inputs, body, TuneOutputs, parent_run_id)
