"""Experiment comparison: pipeline runs side by side, from what the flow logged on each MLflow parent run.

Evaluation numbers are comparable only between runs evaluated on the same items: every run carries its
evaluation set's digest (``selectune.eval_set_digest``), the table shows it, and differences against a baseline
run (``--baseline``) are computed only for runs with the baseline's digest, item by item, with paired bootstrap
intervals from the runs' per-item tables (``evaluate/items.parquet``). Runs of another set are marked so.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# (column, where, key): what a reader compares. Every flow run logs these names on its parent run.
FIELDS: list[tuple[str, str, str]] = [
    ("run", "name", ""),
    ("started", "start", ""),
    ("status", "status", ""),
    ("strategy", "param", "selection.strategy"),
    ("ranked by", "param", "selection.by"),
    ("budget", "budget", ""),
    ("scoring models", "param", "selectit.models"),
    ("recycling", "param", "reflection.enabled"),
    ("records in", "metric", "records_in"),
    ("selected", "metric", "records_selected"),
    ("selected digest", "tag", "selectune.selected_digest"),
    ("eval set", "tag", "selectune.eval_set_digest"),
    ("eval items", "metric", "eval.items"),
    ("AUROC (demo labels)", "metric", "auroc.selectit_score"),
    ("base loss", "metric", "eval.loss.base"),
    ("tuned loss", "metric", "eval.loss.tuned"),
    ("tuned - base loss [95% CI]", "interval", "eval.loss.tuned_vs_base.delta"),
    ("win-rate vs base [95% CI]", "interval", "eval.winrate.tuned_vs_base"),
    ("judge orders agree", "metric", "eval.winrate.tuned_vs_base.orders_agree"),
    ("judge mean score", "metric", "judge.mean_score"),
    ("teacher calls", "metric", "teacher.calls"),
    ("teacher cost USD", "metric", "teacher.cost"),
    ("seconds", "metric", "seconds"),
    ("model version", "tag", "selectune.model_uri"),
]
PLOTTED = ["selected", "AUROC (demo labels)", "tuned loss", "judge mean score", "teacher cost USD", "seconds"]
VS_BASELINE = {"loss": "Δ tuned loss vs baseline [95% CI]", "winrate_vs_base": "Δ win-rate vs baseline [95% CI]"}


def _budget(params: dict[str, str]) -> str:
    for key, label in (("selection.top_k", "k="), ("selection.threshold", ">="), ("selection.fraction", "fraction ")):
        if params.get(key):
            return f"{label}{params[key]}"
    return ""


def _fmt(estimate: float, low: float, high: float) -> str:
    return f"{estimate:+.4f} [{low:+.4f}, {high:+.4f}]"


def _row(run: Any) -> dict[str, Any]:
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    row: dict[str, Any] = {"run_id": run.info.run_id}
    for column, where, key in FIELDS:
        if where == "name":
            row[column] = run.info.run_name
        elif where == "start":
            row[column] = pd.Timestamp(run.info.start_time, unit="ms").strftime("%Y-%m-%d %H:%M")
        elif where == "status":
            row[column] = run.info.status
        elif where == "budget":
            row[column] = _budget(params)
        elif where == "param":
            row[column] = params.get(key, "")
        elif where == "metric":
            row[column] = metrics.get(key)
        elif where == "interval":
            have = all(k in metrics for k in (key, f"{key}.ci_low", f"{key}.ci_high"))
            row[column] = _fmt(metrics[key], metrics[f"{key}.ci_low"], metrics[f"{key}.ci_high"]) if have else ""
        else:
            row[column] = tags.get(key, "")
    row["_evaluate_run"] = tags.get("selectune.evaluate_run_id", "")
    return row


def collect(run_ids: list[str] | None = None, experiment: str | None = None) -> pd.DataFrame:
    """One row per pipeline run: given ids, or every pipeline run of an experiment (top-level runs and runs nested
    in an experiment grid's run), newest first."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from selectune.tracking import runs

    mlflow.set_tracking_uri(runs.tracking_uri())
    client = MlflowClient()
    if run_ids:
        found = [client.get_run(r) for r in run_ids]
    elif experiment:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            raise ValueError(f"no MLflow experiment named {experiment!r} in {runs.tracking_uri()}")
        every = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1000)
        grids = {r.info.run_id for r in every if r.data.tags.get("selectune.kind") == "experiment"}
        found = [r for r in every if r.info.run_id not in grids and r.data.tags.get("mlflow.parentRunId") in
                 grids | {None}]
    else:
        raise ValueError("give run ids or an experiment name")
    return pd.DataFrame([_row(r) for r in found])


def eval_sets(df: pd.DataFrame) -> dict[str, list[str]]:
    """Evaluation set digest -> the runs evaluated on it (runs without an evaluation under "")."""
    return {d: df.loc[df["eval set"] == d, "run_id"].tolist() for d in dict.fromkeys(df["eval set"])}


def _items(evaluate_run: str) -> pd.DataFrame | None:
    import mlflow

    if not evaluate_run:
        return None
    try:
        return pd.read_parquet(mlflow.artifacts.download_artifacts(run_id=evaluate_run,
                                                                   artifact_path="evaluate/items.parquet"))
    except Exception:  # noqa: BLE001 - an older run without per-item results: no interval, said in the table
        return None


def against_baseline(df: pd.DataFrame, baseline: str, resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """``df`` plus, per run, the tuned model's loss and win-rate minus the baseline run's on the same items, with
    paired bootstrap intervals; runs evaluated on another set are marked not comparable."""
    from selectune.core.bootstrap import paired_difference

    if baseline not in set(df["run_id"]):
        raise ValueError(f"--baseline {baseline} is not among the compared runs")
    base = df.set_index("run_id").loc[baseline]
    base_items = _items(base["_evaluate_run"])
    out = df.copy()
    for metric, column in VS_BASELINE.items():
        cells = []
        for _, r in df.iterrows():
            digest = r["eval set"]
            if r["run_id"] == baseline:
                cells.append("baseline")
            elif not digest or digest != base["eval set"]:
                cells.append(f"not comparable (eval set {digest or 'none'} vs {base['eval set'] or 'none'})")
            elif base_items is None or (items := _items(r["_evaluate_run"])) is None:
                cells.append("no per-item results")
            else:
                a, b, w = _pair(items, base_items, metric)
                ci = paired_difference(a, b, w, resamples, seed) if len(a) else None
                cells.append(_fmt(ci.estimate, ci.low, ci.high) if ci and ci.n else "")
        out[column] = cells
    return out


def _pair(items: pd.DataFrame, base_items: pd.DataFrame, metric: str) -> tuple[np.ndarray, ...]:
    """The tuned model's per-item values in two runs, aligned by item; weights shared when equal, else 1."""
    pick = lambda t: t[(t["model"] == "tuned") & (t["metric"] == metric)].set_index("item_id")  # noqa: E731
    a, b = pick(items), pick(base_items)
    ids = a.index.intersection(b.index)
    va, vb = a.loc[ids, "value"].to_numpy(float), b.loc[ids, "value"].to_numpy(float)
    both = np.isfinite(va) & np.isfinite(vb)
    wa, wb = a.loc[ids, "weight"].to_numpy(float)[both], b.loc[ids, "weight"].to_numpy(float)[both]
    return va[both], vb[both], wa if np.array_equal(wa, wb) else np.ones(len(wa))


def text_table(df: pd.DataFrame) -> str:
    """Runs as columns, fields as rows: easy to read side by side in a terminal."""
    shown = df.drop(columns=["_evaluate_run"], errors="ignore").set_index("run_id").T
    return shown.to_string(na_rep="-", max_colwidth=44)


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return base64.b64encode(buf.getvalue()).decode()


def _plots(df: pd.DataFrame) -> list[tuple[str, str]]:
    from matplotlib.figure import Figure

    out = []
    labels = [f"{r[:8]}" for r in df["run_id"]]
    for column in PLOTTED:
        values = pd.to_numeric(df[column], errors="coerce")
        if values.notna().sum() == 0:
            continue
        fig = Figure(figsize=(5, 2.8), layout="constrained")
        ax = fig.add_subplot()
        ax.bar(labels, values.fillna(0).to_numpy(), color="#4c72b0")
        ax.set_title(column)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        out.append((column, _png(fig)))
    for column in [c for c in df.columns if "[95% CI]" in c]:  # intervals as error bars
        parsed = df[column].astype(str).str.extract(r"^([-+\d.]+) \[([-+\d.]+), ([-+\d.]+)\]$").astype(float)
        ok = parsed.notna().all(axis=1).to_numpy()
        if not ok.any():
            continue
        est, low, high = (parsed[i].to_numpy()[ok] for i in range(3))
        fig = Figure(figsize=(5, 2.8), layout="constrained")
        ax = fig.add_subplot()
        ax.errorbar(range(ok.sum()), est, yerr=[est - low, high - est], fmt="o", capsize=4)
        ax.axhline(0.5 if column.startswith("win-rate vs base") else 0.0, color="0.5", linestyle="--")
        ax.set_xticks(range(ok.sum()), [lab for lab, k in zip(labels, ok, strict=True) if k], rotation=30, fontsize=8)
        ax.set_title(column, fontsize=9)
        out.append((column, _png(fig)))
    return out


def html_report(df: pd.DataFrame, path: str | Path, title: str = "selectune runs") -> Path:
    """A self-contained HTML page: the side-by-side table, a bar chart per numeric field, error bars per interval."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = df.drop(columns=["_evaluate_run"], errors="ignore").set_index("run_id").T.to_html(
        na_rep="-", border=0, classes="runs")
    sets = eval_sets(df)
    note = "" if len(sets) <= 1 else (f"<p><b>These runs were evaluated on {len(sets)} different evaluation sets</b> "
                                      "(row <i>eval set</i>): their evaluation numbers are not comparable across "
                                      "sets.</p>")
    figures = "\n".join(f'<figure><img alt="{html.escape(c)}" src="data:image/png;base64,{b64}"></figure>'
                        for c, b64 in _plots(df))
    path.write_text(f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}} table.runs td,table.runs th{{padding:4px 10px;text-align:left}}
table.runs tr:nth-child(even){{background:#f3f3f3}} figure{{display:inline-block;margin:8px}}</style></head>
<body><h1>{html.escape(title)}</h1>{note}{table}<h2>Plots</h2>{figures}</body></html>
""", encoding="utf-8")
    return path
