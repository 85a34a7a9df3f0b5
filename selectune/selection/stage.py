"""The selection stage: scored records -> ``<run_dir>/select/`` selection.parquet (every record, its rank, decision
and reason), selected.parquet and selected_alpaca.json; metrics and before/after figures in MLflow."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from selectune.core import metrics, plots
from selectune.core.digests import file_digest
from selectune.data.stream import CHUNK_ROWS, map_chunks
from selectune.selection.config import SelectionConfig
from selectune.selection.files import SelectOutputs, read_decision_frame, write_ranked
from selectune.selection.select import SelectionResult, rank_order, response_chars, select_records
from selectune.stage import StageResult, run_stage
from selectune.tracking import runs

DECISIONS = ("selected", "below_cut", "score_missing", "score_too_high", "too_short", "too_long", "quota_full",
             "too_similar")


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
                rows: int = CHUNK_ROWS) -> tuple[SelectionResult, SelectOutputs, dict[str, float]]:
    """Select from a scored Parquet file into ``out`` (selection.parquet, selected.parquet, selected_alpaca.json),
    ``rows`` records in memory at a time: the judge's scores first when ``judge`` is set, embeddings (cached,
    memory-mapped) when the diversity pass is on. The result's tables hold the decision columns, not the texts."""
    m: dict[str, float] = {}
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".work-") as work:
        source = Path(scored)
        if judge:
            source, m["judge_seconds"] = judge_file(source, judge, Path(work) / "judged.parquet", rows)
        df = read_decision_frame(source, cfg)
        m["records_in"] = len(df)
        vectors = None
        if cfg.diversity_threshold is not None:
            from selectune.selection.diversity import embed_file

            emb = embed_file(source, cfg.embedder, Path(work) / "vectors.npy", rows)
            vectors = emb.vectors
            m.update({"embedded_new": emb.n_new, "embed_seconds": round(emb.seconds, 3)})
        df = df.assign(_row=np.arange(len(df))).take(rank_order(df, cfg))  # ranked here: no second copy below
        if vectors is not None:
            from selectune.selection.diversity import Rows

            vectors = Rows(vectors, df["_row"].to_numpy())  # the memory-mapped matrix, read in rank order
        res = select_records(df, cfg, vectors)
        del df, vectors
        rows_of = res.table.pop("_row").to_numpy()
        res.selected.pop("_row")
        outputs = write_ranked(source, res.table, rows_of, out, rows)
    m.update(stage_metrics(res, cfg))
    return res, outputs, m


def judge_file(src: Path, judge: str, dst: Path, rows: int = CHUNK_ROWS) -> tuple[Path, float]:
    """``src`` plus ``judge_score`` (the judge's reference-free 0-9 rating of each (instruction, output)) written to
    ``dst`` ``rows`` records at a time, the judge loaded once; returns ``dst`` and the seconds it took."""
    import time

    from selectune.judge.infer import load_judge, score_pairs

    start = time.perf_counter()
    model = load_judge(judge)
    map_chunks(src, dst, lambda _, chunk: chunk.assign(
        judge_score=score_pairs(model, chunk, with_reference=False)["judge_score"].to_numpy()), rows)
    return dst, round(time.perf_counter() - start, 3)


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
    if "response_chars" in t.columns and len(sel):
        m["output_chars_mean.all"] = round(float(response_chars(t).mean()), 1)
        m["output_chars_mean.selected"] = round(float(response_chars(sel).mean()), 1)
    return m


def log_selection(res: SelectionResult, cfg: SelectionConfig, selected_path: str) -> None:
    """Into the active MLflow run: the selected dataset, the decision table and the before/after figures."""
    import mlflow

    t, sel = res.table, res.selected
    runs.log_dataset_file(selected_path, selected_path, "selected", "training")
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
    if "response_chars" in t.columns:
        lengths, sel_lengths = t["response_chars"], sel["response_chars"]
        runs.log_figure(plots.before_after_histogram(lengths, sel_lengths, "response length: all vs selected",
                                                         xlabel="response length (characters)"),
                            "length_before_after.png")
        runs.log_figure(plots.score_vs_length(t[col], lengths, t["selected"],
                                                  f"{name} vs response length"), "score_vs_length.png")
    if cfg.category_column in t.columns:
        runs.log_figure(plots.category_mix(t[cfg.category_column], sel[cfg.category_column],
                                               f"{cfg.category_column} mix: all vs selected"), "category_mix.png")
