"""Deployments as code: ``python deployments/deploy.py`` registers the three deployments on a `process` work
pool.

* ``curate-on-demand``: no schedule; every stage config is a typed pydantic parameter, so the Prefect UI
  renders a form (Deployments -> curate-on-demand -> Run -> Custom run).
* ``scheduled-retrain``: a cron schedule over a dataset location that grows; each run scores only new
  records (content-addressed caches), re-selects over all of them, and retrains only when the selected
  subset changed.
* ``retrain-on-new-data``: no schedule; an event trigger on ``selectune.dataset.updated`` (emitted by
  ``selectune data add``) starts one run per dataset folder, debounced: the first event schedules a run ``within``
  seconds later (default 10 minutes) and further events in that window start nothing more.

Start a worker afterwards: ``prefect worker start --pool selectune-process``. Docker and Kubernetes
variants are in deployments/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = "flows/curate.py:curate"
RETRAIN_ENTRYPOINT = "flows/retrain.py:retrain_on_new_data"
DEBOUNCE_S = 600
POOL = "selectune-process"
CRON = "0 3 * * *"  # every night at 03:00


async def ensure_pool(name: str, kind: str = "process") -> None:
    """Create the work pool with the worker type's default job template unless it exists."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    async with get_client() as client:
        try:
            await client.read_work_pool(name)
        except ObjectNotFound:
            template = ProcessWorker.get_default_base_job_template() if kind == "process" else {}
            await client.create_work_pool(WorkPoolCreate(name=name, type=kind, base_job_template=template))


def retrain_parameters(data_input: str, experiment: str = "selectune-retrain") -> dict[str, Any]:
    """Parameters of the scheduled run: the growing dataset, a fresh run dir per run (the default)."""
    return {"data": {"input": data_input, "on_invalid": "skip"}, "experiment": experiment}


def dataset_trigger(within: int = DEBOUNCE_S, folder: str | None = None) -> Any:
    """The retrain-on-new-data trigger: reactive on the dataset event, one bucket per dataset folder, firing on the
    first event and scheduling the run ``within`` seconds later, so a burst of additions starts one run that sees
    all of them (Prefect's debouncing pattern)."""
    from datetime import timedelta

    from prefect.events import DeploymentEventTrigger

    from selectune.data.parts import EVENT

    match = {"selectune.kind": "dataset"}
    if folder:
        match["prefect.resource.id"] = str(Path(folder).resolve())
    return DeploymentEventTrigger(name="dataset updated", expect={EVENT}, match=match, for_each={"prefect.resource.id"},
                                  posture="Reactive", threshold=1, within=timedelta(seconds=within),
                                  schedule_after=timedelta(seconds=within),
                                  parameters={"dataset": "{{ event.resource.id }}"})


def deploy(pool: str = POOL, source: str | Path = ROOT, cron: str = CRON, data_input: str | None = None,
           only: str | None = None, within: int = DEBOUNCE_S, recipe: str | None = None,
           dataset: str | None = None) -> dict[str, str]:
    """Register the deployments; returns {name: deployment id}."""
    from prefect import flow

    from selectune.core.settings import disable_telemetry

    disable_telemetry()
    asyncio.run(ensure_pool(pool))
    pipeline = flow.from_source(source=str(source), entrypoint=ENTRYPOINT)
    ids: dict[str, str] = {}
    if only in (None, "curate-on-demand"):
        ids["curate-on-demand"] = str(pipeline.deploy(
            name="curate-on-demand", work_pool_name=pool, build=False, push=False, print_next_steps=False,
            description="Dashboard-triggered run: fill in the stage configs in the form.",
            tags=["selectune", "on-demand"]))
    if only in (None, "scheduled-retrain"):
        growing = data_input or str(Path(source) / "data" / "incoming" / "records.jsonl")
        ids["scheduled-retrain"] = str(pipeline.deploy(
            name="scheduled-retrain", work_pool_name=pool, build=False, push=False, print_next_steps=False,
            cron=cron, parameters=retrain_parameters(growing),
            description="Nightly incremental retraining over a growing dataset.", tags=["selectune", "scheduled"]))
    if only in (None, "retrain-on-new-data"):
        retrain = flow.from_source(source=str(source), entrypoint=RETRAIN_ENTRYPOINT)
        ids["retrain-on-new-data"] = str(retrain.deploy(
            name="retrain-on-new-data", work_pool_name=pool, build=False, push=False, print_next_steps=False,
            triggers=[dataset_trigger(within, dataset)], parameters={"recipe": recipe} if recipe else {},
            description=f"Retraining when `selectune data add` grows a dataset folder (debounced {within} s).",
            tags=["selectune", "event"]))
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", default=POOL, help="process work pool (created if missing)")
    parser.add_argument("--source", default=str(ROOT), help="project folder or git URL the worker runs from")
    parser.add_argument("--cron", default=CRON, help="schedule of scheduled-retrain")
    parser.add_argument("--data", default=None, help="growing dataset for scheduled-retrain "
                        "(default data/incoming/records.jsonl)")
    parser.add_argument("--only", choices=["curate-on-demand", "scheduled-retrain", "retrain-on-new-data"],
                        default=None)
    parser.add_argument("--within", type=int, default=DEBOUNCE_S, help="retrain-on-new-data: debounce window, s")
    parser.add_argument("--recipe", default=None, help="retrain-on-new-data: the pipeline recipe (YAML) it runs")
    parser.add_argument("--dataset", default=None, help="retrain-on-new-data: react to this dataset folder only "
                        "(default: every folder `selectune data add` writes)")
    args = parser.parse_args()
    for name, dep_id in deploy(args.pool, args.source, args.cron, args.data, args.only, args.within, args.recipe,
                               args.dataset).items():
        print(f"{name}: {dep_id}")
    print(f"start a worker: prefect worker start --pool {args.pool}")


if __name__ == "__main__":
    main()
