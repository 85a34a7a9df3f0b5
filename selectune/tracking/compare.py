"""Experiment comparison: pipeline runs side by side, from what the flow logged on each MLflow parent run."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import pandas as pd

# (column, where, key): what a reader compares. Every flow run logs these names on its parent run.
FIELDS: list[tuple[str, str, str]] = [
    ("run", "name", ""),
    ("started", "start", ""),
    ("status", "status", ""),
    ("strategy", "param", "selection.strategy"),
    ("budget", "budget", ""),
    ("scoring models", "param", "selectit.models"),
    ("recycling", "param", "reflection.enabled"),
    ("records in", "metric", "records_in"),
    ("selected", "metric", "records_selected"),
    ("selected digest", "tag", "selectune.selected_digest"),
    ("AUROC (demo labels)", "metric", "auroc.selectit_score"),
    ("base held-out loss", "metric", "eval.base_loss"),
    ("tuned held-out loss", "metric", "eval.tuned_loss"),
    ("judge mean score", "metric", "judge.mean_score"),
    ("teacher calls", "metric", "teacher.calls"),
    ("teacher cost USD", "metric", "teacher.cost"),
    ("seconds", "metric", "seconds"),
    ("model version", "tag", "selectune.model_uri"),
]
PLOTTED = ["selected", "AUROC (demo labels)", "tuned held-out loss", "judge mean score", "teacher cost USD",
           "seconds"]


def _budget(params: dict[str, str]) -> str:
    for key, label in (("selection.top_k", "k="), ("selection.threshold", ">="), ("selection.fraction", "top ")):
        if params.get(key):
            return f"{label}{params[key]}"
    return ""


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
        else:
            row[column] = tags.get(key, "")
    return row


def collect(run_ids: list[str] | None = None, experiment: str | None = None) -> pd.DataFrame:
    """One row per pipeline (parent) run: given ids, or every parent run of an experiment, newest first."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from selectune.tracking import runs

    mlflow.set_tracking_uri(runs.tracking_uri())
    client = MlflowClient()
    if run_ids:
        runs = [client.get_run(r) for r in run_ids]
    elif experiment:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            raise ValueError(f"no MLflow experiment named {experiment!r} in {runs.tracking_uri()}")
        runs = [r for r in client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"],
                                              max_results=500)
                if "mlflow.parentRunId" not in r.data.tags]
    else:
        raise ValueError("give run ids or an experiment name")
    return pd.DataFrame([_row(r) for r in runs])


def text_table(df: pd.DataFrame) -> str:
    """Runs as columns, fields as rows: easy to read side by side in a terminal."""
    shown = df.set_index("run_id").T
    return shown.to_string(na_rep="-", max_colwidth=40)


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
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        out.append((column, base64.b64encode(buf.getvalue()).decode()))
    return out


def html_report(df: pd.DataFrame, path: str | Path, title: str = "selectune runs") -> Path:
    """A self-contained HTML page: the side-by-side table and one bar chart per numeric field."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = df.set_index("run_id").T.to_html(na_rep="-", border=0, classes="runs")
    figures = "\n".join(f'<figure><img alt="{html.escape(c)}" src="data:image/png;base64,{b64}"></figure>'
                        for c, b64 in _plots(df))
    path.write_text(f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}} table.runs td,table.runs th{{padding:4px 10px;text-align:left}}
table.runs tr:nth-child(even){{background:#f3f3f3}} figure{{display:inline-block;margin:8px}}</style></head>
<body><h1>{html.escape(title)}</h1>{table}<h2>Plots</h2>{figures}</body></html>
""", encoding="utf-8")
    return path
