"""The experiment flow: every arm x seed of an experiment recipe as a curate subflow (each visible in the Prefect UI),
then one table comparing the arms on the shared evaluation set, with intervals over items and seeds.

One MLflow run for the experiment, the pipeline runs nested under it; the table, the figure and each arm's numbers
(``experiment.<metric>.<arm>``, ``...<arm>_vs_<first arm>.delta`` with ``.ci_low`` / ``.ci_high``) on it, and the
same table as a Prefect markdown artifact (``selectune-experiment``).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.curate import curate
from selectune.config import PipelineConfig
from selectune.experiment import ExperimentConfig


@flow(name="selectune-experiment", log_prints=True)
def experiment(base: PipelineConfig, grid: ExperimentConfig, name: str = "experiment",
               run_dir: str | None = None) -> dict[str, Any]:
    """Run every arm x seed of the grid and compare the arms."""
    import mlflow
    import pandas as pd

    from selectune import experiment as exp
    from selectune.core.settings import disable_telemetry
    from selectune.tracking.runs import log_figure, parent_run

    disable_telemetry()
    root = Path(run_dir or f"runs/{name}-{datetime.now():%Y%m%d-%H%M%S}").resolve()
    runs = exp.expand(base, grid, root)
    arms, seeds, items = list(grid.arms), list(grid.seeds), {}
    tags = {"prefect.flow_run_id": str(flow_run.id or ""), "selectune.run_dir": str(root),
            "selectune.kind": "experiment"}
    with parent_run(base.experiment, f"experiment-{name}", tags, {"arms": grid.arms, "seeds": seeds}) as run:
        for (arm, seed), cfg in runs.items():
            pipeline = curate.with_options(flow_run_name=f"{name}-{arm}-seed{seed}")
            pipeline(**dict(cfg), parent_run_id=run["mlflow_run_id"])
            items[(arm, seed)] = pd.read_parquet(Path(cfg.run_dir) / "evaluate" / "items.parquet")
        table = exp.grid_table(items, arms, seeds, base.eval.bootstrap_resamples, base.eval.seed, base.eval.confidence)
        mlflow.log_table(table, "experiment/table.json")
        log_figure(exp.grid_figure(table), "experiment/arms.png")
        mlflow.log_metrics(arm_metrics(table, arms[0]))
    text = f"# Experiment {name}\n\n{exp.markdown(table)}"
    create_markdown_artifact(text, key="selectune-experiment", description=f"MLflow run {run['mlflow_run_id']}")
    print(text)
    return {**run, "run_dir": str(root), "table": table.to_dict("records")}


def arm_metrics(table: Any, baseline: str) -> dict[str, float]:
    """The table as MLflow metrics on the experiment run."""
    out = {}
    for r in table.itertuples(index=False):
        name = f"experiment.{r.metric}.{r.arm}"
        out.update({name: r.mean, f"{name}.ci_low": r.ci_low, f"{name}.ci_high": r.ci_high})
        if r.arm != baseline:
            delta = f"experiment.{r.metric}.{r.arm}_vs_{baseline}.delta"
            out.update({delta: getattr(r, f"delta_vs_{baseline}"), f"{delta}.ci_low": r.delta_ci_low,
                        f"{delta}.ci_high": r.delta_ci_high})
    return {k: float(v) for k, v in out.items() if v == v}  # NaN (no such measurement) is left out
