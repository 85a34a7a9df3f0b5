"""Experiment grids: one base recipe, arms that each override part of it (``selection: {strategy: random}``), seeds;
every arm x seed is a pipeline run, all trained alike and evaluated on the same items, and the arms are compared
with intervals over items and seeds.

A recipe is a pipeline recipe plus ``arms`` (name -> partial override; the first arm is the baseline of every
delta) and ``seeds``. Every run gets ``selection.seed``, ``tune.seed`` and ``judge.seed`` from its seed, its own
run dir, and no Model Registry entry. The runs must differ only in what selects the data: the same input, the same
evaluation, the same tuning (base, steps, learning rate, ...) and the same selection budget (a ``full`` arm keeps
everything by definition); otherwise the grid is refused. Shared caches make the repeated work cheap: SelectIT,
IFD and the base model's evaluation answers are computed once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml
from pydantic import Field

from selectune.config import PipelineConfig
from selectune.core.bootstrap import grid_bootstrap
from selectune.core.config import Config, resolve_paths

if TYPE_CHECKING:
    from matplotlib.figure import Figure

BUDGET = ("fraction", "top_k", "threshold")


class ExperimentConfig(Config):
    """The grid of an experiment recipe."""

    arms: dict[str, dict[str, Any]] = Field(..., min_length=1, description="Arm name -> partial recipe override; "
                                            "the first arm is the baseline of every delta")
    seeds: list[int] = Field([0], min_length=1, description="Every arm runs once per seed")


def load_experiment(path: str | Path) -> tuple[PipelineConfig, ExperimentConfig]:
    """(the base pipeline, the grid) from an experiment recipe."""
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    folder = Path(path).resolve().parent  # relative paths are read from the recipe's folder, in the arms too
    grid_raw = {k: raw.pop(k) for k in ("arms", "seeds") if k in raw}
    if isinstance(grid_raw.get("arms"), dict):
        grid_raw["arms"] = {name: resolve_paths(PipelineConfig, over, folder) if isinstance(over, dict) else over
                            for name, over in grid_raw["arms"].items()}
    grid = ExperimentConfig.model_validate(grid_raw)
    return PipelineConfig.model_validate(resolve_paths(PipelineConfig, raw, folder)), grid


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def expand(base: PipelineConfig, grid: ExperimentConfig, root: str | Path) -> dict[tuple[str, int], PipelineConfig]:
    """One pipeline config per arm x seed, under ``root/<arm>-seed<seed>``; refused when the runs would not be
    comparable (see the module docstring)."""
    runs = {}
    for arm, override in grid.arms.items():
        for seed in grid.seeds:
            cfg = _merge(base.model_dump(mode="json"), override)
            cfg = _merge(cfg, {"selection": {"seed": seed}, "tune": {"seed": seed, "register_as": None},
                               "judge": {"seed": seed}, "run_dir": str(Path(root) / f"{arm}-seed{seed}")})
            runs[(arm, seed)] = PipelineConfig.model_validate(cfg)
    check_comparable(runs)
    return runs


def check_comparable(runs: dict[tuple[str, int], PipelineConfig]) -> None:
    """Raise unless the runs differ only in how they select (and their seeds)."""
    first = next(iter(runs.values()))
    if not first.tune.enabled or first.tune.max_steps is None:
        raise ValueError("an experiment trains every arm for the same number of optimizer steps: set tune.max_steps")
    if not first.eval.enabled:
        raise ValueError("an experiment compares arms on the evaluation set: eval.enabled must be true")

    def same(cfg: PipelineConfig) -> dict[str, Any]:
        d = cfg.model_dump(mode="json")
        d["tune"].pop("seed")
        budget = {} if cfg.selection.strategy == "full" else {k: d["selection"][k] for k in BUDGET}
        return {"data": d["data"], "eval": d["eval"], "tune": d["tune"], "budget": budget}

    for (arm, seed), cfg in runs.items():
        mine, theirs = same(cfg), same(first)
        for key in ("data", "eval", "tune", "budget"):
            if mine[key] != theirs[key] and not (key == "budget" and not mine[key]):
                raise ValueError(f"arm {arm!r} (seed {seed}) changes {key} ({mine[key]} vs {theirs[key]}); arms may "
                                 "differ only in how they select the data")


def grid_table(items: dict[tuple[str, int], pd.DataFrame], arms: list[str], seeds: list[int], resamples: int = 1000,
               seed: int = 0, confidence: float = 0.95, model: str = "tuned") -> pd.DataFrame:
    """Per metric and arm: the mean over seeds of the item mean, its interval over items and seeds, and the paired
    difference to the first arm (same seed, same item) with its interval."""
    rows = []
    metrics = sorted({m for df in items.values() for m in df.loc[df["model"] == model, "metric"].unique()
                      if m == "loss" or m.startswith(("winrate_vs_", "lm_eval."))})
    for metric in metrics:
        grids = {arm: _grid(items, arm, seeds, metric, model) for arm in arms}
        base_v, base_w = grids[arms[0]]
        for arm in arms:
            v, w = grids[arm]
            ci = grid_bootstrap(v, w, resamples, seed, confidence)
            shared = np.where(np.isfinite(w) & np.isfinite(base_w), np.minimum(w, base_w), np.nan)
            delta = grid_bootstrap(v - base_v, shared, resamples, seed, confidence)
            rows.append({"metric": metric, "arm": arm, "mean": ci.estimate, "ci_low": ci.low, "ci_high": ci.high,
                         f"delta_vs_{arms[0]}": delta.estimate, "delta_ci_low": delta.low,
                         "delta_ci_high": delta.high, "seeds": len(seeds), "items": ci.n})
    return pd.DataFrame(rows)


def _grid(items: dict[tuple[str, int], pd.DataFrame], arm: str, seeds: list[int], metric: str,
          model: str) -> tuple[np.ndarray, np.ndarray]:
    """values and weights ``[seeds, items]`` of one arm, items in a shared order."""
    frames = [df[(df["model"] == model) & (df["metric"] == metric)].set_index("item_id")
              for df in (items[(arm, s)] for s in seeds)]
    ids = sorted(set().union(*(f.index for f in frames)))
    values = np.stack([f["value"].reindex(ids).to_numpy(float) for f in frames])
    weights = np.stack([f["weight"].reindex(ids).to_numpy(float) for f in frames])
    return values, weights


def grid_figure(table: pd.DataFrame, title: str = "arms: mean and 95% interval over items and seeds") -> Figure:
    """One panel per metric: each arm's mean with its interval."""
    from matplotlib.figure import Figure

    metrics = list(dict.fromkeys(table["metric"]))
    fig = Figure(figsize=(4.0 * len(metrics), 3.2), layout="constrained")
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), k + 1)
        t = table[table["metric"] == metric]
        err = np.array([t["mean"] - t["ci_low"], t["ci_high"] - t["mean"]])
        ax.errorbar(range(len(t)), t["mean"], yerr=err, fmt="o", capsize=5, color="tab:blue")
        ax.set_xticks(range(len(t)), t["arm"], rotation=20)
        ax.set_title(metric + (" (lower is better)" if metric == "loss" else ""), fontsize=9)
    fig.suptitle(title, fontsize=10)
    return fig


def markdown(table: pd.DataFrame) -> str:
    """The experiment table as markdown (the Prefect artifact, the README)."""
    delta = next(c for c in table.columns if c.startswith("delta_vs_"))
    lines = [f"| metric | arm | mean [95% CI] | {delta.replace('_', ' ')} [95% CI] | seeds | items |",
             "|---|---|---|---|---|---|"]
    for r in table.itertuples(index=False):
        d = getattr(r, delta)
        lines.append(f"| {r.metric} | {r.arm} | {r.mean:.4f} [{r.ci_low:.4f}, {r.ci_high:.4f}] | {d:+.4f} "
                     f"[{r.delta_ci_low:+.4f}, {r.delta_ci_high:+.4f}] | {r.seeds} | {r.items} |")
    return "\n".join(lines) + "\n"
