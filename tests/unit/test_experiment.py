"""Experiment grids: arms x seeds expanded into comparable pipeline runs, refused when they are not, and the arm
table with intervals over items and seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from selectune.config import PipelineConfig
from selectune.experiment import ExperimentConfig, expand, grid_table, load_experiment, markdown
from tests.fixtures import RECIPES


def base() -> PipelineConfig:
    return PipelineConfig.model_validate({"tune": {"max_steps": 4}, "selection": {"fraction": 0.2}})


def test_expand_sets_seeds_run_dirs_and_no_registry(tmp_path: Path) -> None:
    grid = ExperimentConfig(arms={"top": {}, "random": {"selection": {"strategy": "random"}}}, seeds=[0, 3])
    runs = expand(base(), grid, tmp_path)
    assert list(runs) == [("top", 0), ("top", 3), ("random", 0), ("random", 3)]
    cfg = runs[("random", 3)]
    assert cfg.selection.strategy == "random" and cfg.selection.seed == 3 and cfg.tune.seed == 3
    assert cfg.judge.seed == 3 and cfg.tune.register_as is None and cfg.run_dir == str(tmp_path / "random-seed3")
    assert runs[("top", 0)].selection.fraction == cfg.selection.fraction == 0.2


@pytest.mark.parametrize(("arms", "match"), [
    ({"a": {}, "b": {"tune": {"learning_rate": 1e-3}}}, "arm 'b' .* changes tune"),
    ({"a": {}, "b": {"selection": {"fraction": 0.5}}}, "arm 'b' .* changes budget"),
    ({"a": {}, "b": {"eval": {"fraction": 0.5}}}, "arm 'b' .* changes eval"),
    ({"a": {}, "b": {"data": {"limit": 10}}}, "arm 'b' .* changes data"),
])
def test_incomparable_arms_are_refused(tmp_path: Path, arms: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        expand(base(), ExperimentConfig(arms=arms), tmp_path)


def test_steps_must_be_fixed_and_a_full_arm_is_allowed(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tune.max_steps"):
        expand(PipelineConfig(), ExperimentConfig(arms={"a": {}}), tmp_path)
    runs = expand(base(), ExperimentConfig(arms={"top": {}, "full": {"selection": {"strategy": "full"}}}), tmp_path)
    assert runs[("full", 0)].selection.strategy == "full"


def test_grid_table_by_hand() -> None:
    def items(values: list[float]) -> pd.DataFrame:
        return pd.DataFrame({"item_id": ["i1", "i2", "i3"], "model": "tuned", "metric": "loss", "value": values,
                             "weight": 1.0})

    runs = {("a", 0): items([2.0, 2.0, 2.0]), ("a", 1): items([2.0, 2.0, 2.0]),
            ("b", 0): items([1.5, 1.5, 1.5]), ("b", 1): items([1.0, 1.0, 1.0])}
    table = grid_table(runs, ["a", "b"], [0, 1], resamples=500)
    a, b = (table[table["arm"] == x].iloc[0] for x in "ab")
    assert a["mean"] == 2.0 and a["ci_low"] == a["ci_high"] == 2.0 and a["delta_vs_a"] == 0.0
    assert b["mean"] == pytest.approx(1.25) and b["delta_vs_a"] == pytest.approx(-0.75)
    assert b["delta_ci_low"] == pytest.approx(-1.0) and b["delta_ci_high"] == pytest.approx(-0.5)  # seeds resampled
    assert b["seeds"] == 2 and b["items"] == 3
    text = markdown(table)
    assert "| loss | b | 1.2500 [1.0000, 1.5000] | -0.7500 [-1.0000, -0.5000] | 2 | 3 |" in text
    assert np.isfinite(table[["mean", "ci_low", "ci_high"]].to_numpy()).all()


def test_shipped_experiment_recipes_expand(tmp_path: Path) -> None:
    for name in ("experiment-demo.yaml", "experiment-alpaca.yaml"):
        base_cfg, grid = load_experiment(RECIPES / name)
        runs = expand(base_cfg, grid, tmp_path)
        assert len(runs) == len(grid.arms) * len(grid.seeds) >= 6 and len(grid.seeds) == 2
        assert len({r.tune.max_steps for r in runs.values()}) == 1


def test_cli_refuses_an_incomparable_grid_before_any_work(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from selectune.cli.main import app

    recipe = tmp_path / "bad.yaml"
    recipe.write_text(yaml.safe_dump({"experiment": "x", "tune": {"max_steps": 2}, "arms": {
        "a": {}, "b": {"tune": {"learning_rate": 0.1}}}}, sort_keys=False))
    res = CliRunner().invoke(app, ["experiment", "--config", str(recipe), "--run-dir", str(tmp_path / "runs")])
    assert res.exit_code == 2 and str(recipe) in res.output and "arm 'b'" in res.output and "changes tune" in res.output
    assert not (tmp_path / "runs").exists()
