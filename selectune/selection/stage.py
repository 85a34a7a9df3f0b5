"""The selection stage: scored records -> ``<run_dir>/select/`` selection.parquet (every record, its rank, decision
and reason), selected.parquet and selected_alpaca.json; metrics and before/after figures in MLflow."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from selectune.core import metrics, plots
from selectune.core.digests import file_digest
from selectune.data.records import export_alpaca, write_parquet
from selectune.selection.config import SelectionConfig
from selectune.selection.select import SelectionResult, select_records
from selectune.stage import StageResult, run_stage
from selectune.tracking import runs

DECISIONS = ("selected", "below_cut", "score_missing", "score_too_high", "too_short", "too_long", "quota_full",
             "too_similar")


@dataclass(frozen=True)
class SelectOutputs:
    selection: Path  # every record with rank, score, decision and reason
    selected: Path  # the selected subset
    alpaca: Path  # the selected subset as Alpaca JSON


def select_stage(cfg: SelectionConfig, scored: str | Path, run_dir: str | Path,
                 parent_run_id: str | None = None) -> StageResult[SelectOutputs]:
    """Select from scored.parquet; write selection.parquet (every record with rank, score, decision and reason),
    selected.parquet and selected_alpaca.json. Embeds records (cached) only when the diversity pass is on."""
    inputs = {"scored": file_digest(scored)}
    if cfg.diversity_threshold is not None:
        from selectune.core.models import fingerprint

        inputs["embedder"] = fingerprint(cfg.embedder)
    judge = None
    if cfg.judge:
        from selectune.tracking.registry import model_digest, resolve_ref

        judge = resolve_ref(cfg.judge)  # a later registered version must not reuse this stage's output
        inputs["judge"] = model_digest(judge)

    def body(out: Path) -> tuple[SelectOutputs, dict[str, float]]:
        res, outputs, m = select_file(cfg, scored, out, judge)
        if parent_run_id:
            log_selection(res, cfg, str(outputs.selected))
        return outputs, m

    return run_stage("select", run_dir, cfg, inputs, body, SelectOutputs, parent_run_id)


def select_file(cfg: SelectionConfig, scored: str | Path, out: Path, judge: str | None = None,
                ) -> tuple[SelectionResult, SelectOutputs, dict[str, float]]:
    """Select from a scored Parquet file into ``out`` (selection.parquet, selected.parquet, selected_alpaca.json):
    the judge's scores first when ``judge`` is set, embeddings (cached) when the diversity pass is on."""
    df = pd.read_parquet(scored)
    if "output" in df.columns:  # a derived score for length baselines (by: response_chars)
        df = df.assign(response_chars=df["output"].fillna("").astype(str).str.len())
    m: dict[str, float] = {"records_in": len(df)}
    vectors = None
    if judge:
        df, m["judge_seconds"] = judge_records(df, judge)
    if cfg.diversity_threshold is not None:
        from selectune.selection.diversity import embed_records

        emb = embed_records(df, cfg.embedder)
        vectors = emb.vectors
        m.update({"embedded_new": emb.n_new, "embed_seconds": round(emb.seconds, 3)})
    res = select_records(df, cfg, vectors)
    outputs = SelectOutputs(write_parquet(res.table, out / "selection.parquet"),
                            write_parquet(res.selected, out / "selected.parquet"),
                            export_alpaca(res.selected, out / "selected_alpaca.json"))
    m.update(stage_metrics(res, cfg))
    return res, outputs, m


def judge_records(df: pd.DataFrame, judge: str) -> tuple[pd.DataFrame, float]:
    """``df`` plus ``judge_score``: the judge's reference-free 0-9 rating of each (instruction, output)."""
    import time

    from selectune.judge.infer import load_judge, score_pairs

    start = time.perf_counter()
    scores = score_pairs(load_judge(judge), df, with_reference=False)["judge_score"]
    return df.assign(judge_score=scores.to_numpy()), round(time.perf_counter() - start, 3)


def _score_name(cfg: SelectionConfig) -> str:
    return "combined" if cfg.strategy == "combined" else "random_key" if cfg.strategy == "random" else cfg.by


def stage_metrics(res: SelectionResult, cfg: SelectionConfig) -> dict[str, float]:
    """records_out, budget, cut, counts per decision kind, AUROC of the score used and label/length summaries."""
    t, sel = res.table, res.selected
    m: dict[str, float] = {"records_out": len(sel)}
    if res.budget is not None:
        m["budget"] = res.budget
    if res.cut_value is not None:
        m["cut_value"] = res.cut_value
    counts = t["decision"].value_counts()
    m.update({f"decision.{k}": int(counts.get(k, 0)) for k in DECISIONS})
    if cfg.strategy != "random" and t["selection_score"].notna().any():
        auroc = metrics.label_auroc(t, "selection_score")
        if auroc is not None:
            m[f"auroc.{_score_name(cfg)}"] = round(auroc, 4)
    if "label" in t.columns and len(sel):
        m["selected_poor_fraction"] = round(float((sel["label"] == "poor").mean()), 4)
        m["input_poor_fraction"] = round(float((t["label"] == "poor").mean()), 4)
    if "output" in t.columns and len(sel):
        m["output_chars_mean.all"] = round(float(t["output"].fillna("").str.len().mean()), 1)
        m["output_chars_mean.selected"] = round(float(sel["output"].fillna("").str.len().mean()), 1)
    return m


def log_selection(res: SelectionResult, cfg: SelectionConfig, selected_path: str) -> None:
    """Into the active MLflow run: the selected dataset, the decision table and the before/after figures."""
    import mlflow

    t, sel = res.table, res.selected
    runs.log_dataset(sel, selected_path, "selected", "training")
    cols = ["id", "rank", "selection_score", "selected", "decision", "decision_reason"]
    mlflow.log_table(t[cols], "selection.json")
    name, col = _score_name(cfg), "selection_score"
    if cfg.strategy in ("random", "full") and cfg.by in t.columns and pd.api.types.is_numeric_dtype(t[cfg.by]):
        name, col = cfg.by, cfg.by  # baselines: show where they fall on the usual score
    runs.log_figure(plots.score_histogram(t[col], res.cut_value, f"{name} with the selection cut",
                                              labels=t.get("label"), xlabel=name), "selection_cut.png")
    columns = {name: col} if t[col].notna().any() else {}
    if cfg.strategy == "combined":
        columns.update({c: c for c in cfg.weights or {}})
    for label, c in columns.items():
        runs.log_figure(plots.before_after_histogram(t[c], sel[c], f"{label}: all vs selected", xlabel=label),
                            f"score_before_after.{label}.png")
    if "output" in t.columns:
        lengths, sel_lengths = t["output"].fillna("").str.len(), sel["output"].fillna("").str.len()
        runs.log_figure(plots.before_after_histogram(lengths, sel_lengths, "response length: all vs selected",
                                                         xlabel="response length (characters)"),
                            "length_before_after.png")
        runs.log_figure(plots.score_vs_length(t[col], lengths, t["selected"],
                                                  f"{name} vs response length"), "score_vs_length.png")
    if cfg.category_column in t.columns:
        runs.log_figure(plots.category_mix(t[cfg.category_column], sel[cfg.category_column],
                                               f"{cfg.category_column} mix: all vs selected"), "category_mix.png")
