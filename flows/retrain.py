"""Retraining when data arrives: the flow behind the ``retrain-on-new-data`` deployment. `selectune data add`
appends a part to a dataset folder and emits ``selectune.dataset.updated``; the deployment's trigger (debounced:
a burst of additions starts one run) passes the folder here, and the whole pipeline runs over it: only new records
are scored, the subset is re-selected, a changed subset is trained, evaluated against the champion and promoted only
when it is better."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.curate import run_pipeline
from selectune.config import load_config


@flow(name="selectune-retrain-on-new-data", log_prints=True)
def retrain_on_new_data(dataset: str, recipe: str | None = None,
                        experiment: str = "selectune-retrain") -> dict[str, Any]:
    """Run the pipeline (``recipe``, read when the run starts; defaults otherwise) over the dataset folder."""
    cfg = load_config(recipe)
    cfg.data.input, cfg.experiment = dataset, experiment
    print(f"retraining over {dataset} (recipe: {recipe or 'defaults'})")
    return run_pipeline(cfg)
