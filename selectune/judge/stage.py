"""Stage 5: the Self-J judge. Label sampled responses of the model under evaluation against gold references,
train the judge on part of the instructions, and evaluate it on the rest against baselines.

Held-out evaluation (instructions never seen in training, with all their samples): Pearson and Spearman of
the judge's reference-free score with the reference-based label, next to baselines on the same pairs:
response length (characters), cosine to the reference (a part of the label itself, so an optimistic
baseline), the untrained judge base's reference-free self-evaluation, and response perplexity under the
model under evaluation. Selective instruction following is evaluated as a coverage-vs-quality curve.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from selectune.core.digests import file_digest
from selectune.core.models import collect_if_alive
from selectune.judge.config import JudgeConfig
from selectune.judge.prompts import prompt_texts
from selectune.stage import StageResult, run_stage
from selectune.tracking import runs
from selectune.tracking.registry import load_model, model_digest

PAIR_COLUMNS = ["id", "sample", "instruction", "input", "response", "reference"]


def response_perplexity(lm: object, pairs: pd.DataFrame, cfg: JudgeConfig) -> np.ndarray:
    """Perplexity of each response after its templated prompt under the model under evaluation (NaN if empty)."""
    from selectune.core.losses import sequence_losses
    from selectune.core.prompts import prompt_text

    out = np.full(len(pairs), np.nan)
    keep = np.flatnonzero(pairs["response"].str.strip().str.len().to_numpy() > 0)
    if len(keep):
        rows = pairs.iloc[keep]
        prefixes = [prompt_text(lm.template, lm.tokenizer, r.instruction, r.input) for r in rows.itertuples()]
        losses, _, _ = sequence_losses(lm.model, lm.tokenizer, prefixes, rows["response"].tolist(),
                                       max(cfg.max_tokens, 32), cfg.score_batch_size)
        out[keep] = np.exp(losses)
    return out


def _corr_metrics(prefix: str, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    from selectune.judge.metrics import correlations

    ok = np.isfinite(x) & np.isfinite(y)
    pearson, spearman = correlations(x[ok], y[ok])
    return {k: round(v, 4) for k, v in {f"{prefix}.pearson": pearson, f"{prefix}.spearman": spearman}.items()
            if math.isfinite(v)}


@dataclass(frozen=True)
class JudgeOutputs:
    labels: Path  # every sampled response with its self-evaluation, cosine and label
    adapter: Path  # the judge's LoRA adapter folder
    eval: Path  # held-out pairs with the judge's and the baselines' scores
    coverage_plot: Path
    model_uri: str | None = None  # models:/NAME/VERSION when registered


def judge_stage(cfg: JudgeConfig, records: str | Path, run_dir: str | Path, parent_run_id: str | None = None,
                model_under_eval: str | None = None) -> StageResult[JudgeOutputs]:
    """Write ``<run_dir>/judge/``: labels.parquet, adapter/, eval.parquet, coverage.png; with a parent MLflow run,
    log them and register the judge as ``cfg.register_as`` (output ``model_uri``)."""
    from selectune.core import models
    from selectune.data.records import text_digest

    ref = model_under_eval or cfg.model
    if not ref:
        raise ValueError("judge stage: no model under evaluation; pass the tune stage's adapter folder or "
                         "models:/ URI, or set judge.model")
    inputs = {"records": text_digest(records), "model_under_eval": model_digest(ref),
              "base": models.fingerprint(cfg.base), "embedder": models.fingerprint(cfg.embedder)}
    for kind in ("with_reference", "without_reference"):
        if path := getattr(cfg.prompts, kind):
            inputs[f"prompt.{kind}"] = file_digest(path)

    def body(out: Path) -> tuple[JudgeOutputs, dict[str, float]]:
        from selectune.core import metrics
        from selectune.core.settings import device, resolve_dtype
        from selectune.data.records import load_records, split, write_parquet
        from selectune.judge import infer as judge_infer
        from selectune.judge import labels as judge
        from selectune.judge import train as judge_train
        from selectune.judge.metrics import coverage_curve, coverage_figure

        df = load_records(records).records
        if len(df) < 2:
            raise ValueError(f"{records}: the judge stage needs at least 2 records (train and held-out), got {len(df)}")
        _, held = split(df, cfg.eval_fraction, cfg.seed)
        samples = None
        if cfg.backend == "vllm":  # sampled on vLLM; the engine is released before the transformers model loads
            from selectune.tracking.registry import load_vllm_model

            vlm = load_vllm_model(ref, cfg.vllm, cfg.dtype, cfg.seed, cfg.trust_remote_code)
            samples = judge.sample_for_labels(judge.label_records(df), cfg, vlm)
            alive = weakref.ref(vlm)
            del vlm
            collect_if_alive(alive)
        dev = device()
        lm = load_model(ref, "auto", resolve_dtype(cfg.dtype, dev), dev, cfg.trust_remote_code)
        labels = judge.generate_labels(df, cfg, lm, samples=samples)
        labels["split"] = np.where(labels["id"].isin(set(held["id"])), "heldout", "train")
        labels_path = write_parquet(labels, out / "labels.parquet")
        pairs = labels[labels["split"] == "heldout"].reset_index(drop=True)
        ppl = response_perplexity(lm, pairs, cfg)
        alive = weakref.ref(lm.model)
        del lm
        collect_if_alive(alive)

        res = judge_train.train_judge(cfg, labels[labels["split"] == "train"].reset_index(drop=True), out)
        jd = judge_infer.Judge(res.model, res.tokenizer, res.template, cfg.max_tokens, str(res.adapter_dir),
                               prompt_texts(cfg.prompts))

        def score(frame: pd.DataFrame, with_ref: bool) -> np.ndarray:
            return judge_infer.score_pairs(jd, frame, with_ref, cfg.score_batch_size,
                                           cfg.max_batch_tokens)["judge_score"].to_numpy()

        table = pairs[PAIR_COLUMNS + ["label", "digit", "self_eval", "cosine"]].copy()
        table["judge_score"] = score(pairs, False)
        table["judge_score_with_ref"] = score(pairs, True)
        with res.model.disable_adapter():
            table["base_self_eval"] = score(pairs, False)
            base_outputs = score(df, False) if "label" in df.columns else None
        table["length"] = pairs["response"].str.len().astype(float)
        table["perplexity"] = ppl
        eval_path = write_parquet(table, out / "eval.parquet")

        y = table["label"].to_numpy(dtype=float)
        m: dict[str, float] = {f"judge.{k}": v for k, v in res.metrics.items()}
        m.update(_corr_metrics("judge", table["judge_score"].to_numpy(), y))
        m.update(_corr_metrics("judge.with_ref", table["judge_score_with_ref"].to_numpy(), y))
        for name in ("length", "cosine", "base_self_eval", "perplexity"):
            m.update(_corr_metrics(f"judge.baseline.{name}", table[name].to_numpy(dtype=float), y))
        _, _, auc = coverage_curve(table["judge_score"], y)
        answered = table["judge_score"] >= cfg.threshold
        m.update({"judge.mean_score": round(float(table["judge_score"].mean()), 4), "judge.coverage_auc": round(auc, 4),
                  "judge.coverage_auc_oracle": round(coverage_curve(y, y)[2], 4),
                  "judge.coverage_auc_random": round(float(y.mean()), 4),
                  "judge.answered_at_threshold": round(float(answered.mean()), 4),
                  "judge.label_mean": round(float(labels["label"].mean()), 4), "judge.labels": len(labels),
                  "judge.heldout_pairs": len(table), "judge.train_records": len(df) - len(held),
                  "judge.heldout_records": len(held)})
        if answered.any():
            m["judge.quality_at_threshold"] = round(float(y[answered.to_numpy()].mean()), 4)
        scores = table["judge_score"].to_numpy()
        for coverage in (0.5, 0.8):  # thresholds to pick from: each judge has its own score scale
            t = float(np.sort(scores)[::-1][math.ceil(coverage * len(scores)) - 1])  # answers >= coverage
            m[f"judge.threshold_at_coverage_{coverage:g}"] = math.floor(t * 1e4) / 1e4  # rounded down: >= it answers
            m[f"judge.quality_at_coverage_{coverage:g}"] = round(float(y[scores >= t].mean()), 4)
        if base_outputs is not None:  # the records' own outputs vs their good/poor labels (all records)
            own = df.assign(judge_output_score=score(df, False), base_output_score=base_outputs)
            for col in ("judge_output_score", "base_output_score"):
                if (auroc := metrics.label_auroc(own, col)) is not None:
                    m[f"judge.auroc.{col}"] = round(auroc, 4)
        fig = coverage_figure(table["judge_score"].to_numpy(), y, cfg.threshold)
        fig.savefig(out / "coverage.png", dpi=100)
        model_uri = _log(cfg, ref, inputs, labels, labels_path, table, fig, res, m) if parent_run_id else None
        return JudgeOutputs(labels_path, res.adapter_dir, eval_path, out / "coverage.png", model_uri), m

    return run_stage("judge", run_dir, cfg, inputs, body, JudgeOutputs, parent_run_id,
                     {"judge.model_under_eval": ref})


def _log(cfg: JudgeConfig, ref: str, inputs: dict[str, str], labels: pd.DataFrame, labels_path: Path,
         table: pd.DataFrame, fig: object, res: object, m: dict[str, float]) -> str | None:
    """Dataset, table, figure and adapter into the active (stage) run; the Model Registry entry."""
    import mlflow

    digest = runs.log_dataset(labels, labels_path, "judge_labels", "training",
                                  ["id", "sample", "response", "digit"])
    mlflow.log_table(table, "judge/eval.json")
    runs.log_figure(fig, "judge/coverage.png")
    mlflow.log_artifacts(str(res.adapter_dir), "judge_adapter")
    from selectune.judge.prompts import REF_FREE, WITH_REF
    from selectune.tracking.prompts import log_prompts

    with_ref, free = prompt_texts(cfg.prompts)
    log_prompts({"judge-with-reference": with_ref or WITH_REF, "judge-without-reference": free or REF_FREE})
    if not cfg.register_as:
        return None
    from selectune.tracking import registry

    tags = {"selectune.kind": "self-j-judge", "selectune.base": cfg.base, "selectune.base_fingerprint": inputs["base"],
            "selectune.label_digest": digest, "selectune.dataset.training": digest, "selectune.model_under_eval": ref,
            "selectune.model_under_eval_digest": inputs["model_under_eval"], "selectune.template": res.template,
            "selectune.run_dir": str(Path(res.adapter_dir).parent.parent)}
    tags.update({f"selectune.{k}": str(m[k]) for k in ("judge.pearson", "judge.spearman") if k in m})
    return registry.log_and_register(res.adapter_dir, cfg.register_as, tags)
