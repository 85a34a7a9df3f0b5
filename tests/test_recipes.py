"""Tests for the shipped YAML recipes and config validation (selectune.config)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from selectune.config import PipelineConfig, SelectITConfig, load_config
from tests.fixtures import RECIPES

RECIPE_FILES = sorted(RECIPES.glob("*.yaml"))


def test_recipes_exist() -> None:
    assert RECIPE_FILES, "no deployments/recipes/*.yaml found"


@pytest.mark.parametrize("recipe", RECIPE_FILES, ids=lambda p: p.name)
def test_recipe_loads(recipe: Path) -> None:
    cfg = load_config(recipe)
    assert isinstance(cfg, PipelineConfig)
    assert cfg.selectit.models
    assert cfg.experiment != PipelineConfig().experiment  # each recipe names its own experiment


def test_no_config_means_defaults() -> None:
    assert load_config(None) == PipelineConfig()


def test_empty_recipe_means_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing here\n", encoding="utf-8")
    assert load_config(path) == PipelineConfig()


def test_recipe_values_are_applied(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("experiment: x\nselectit:\n  models: [a, b]\n  weights: [1, 3]\n  k: 7\n"
                    "selection:\n  k: 10\n", encoding="utf-8")
    cfg = load_config(path)
    assert cfg.experiment == "x"
    assert cfg.selectit.models == ["a", "b"] and cfg.selectit.weights == [1.0, 3.0] and cfg.selectit.k == 7
    assert cfg.selection.criteria() == {"k": 10}


def _load_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValidationError) as info:
        load_config(path)
    return str(info.value)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("selectit:\n  modelz: [a]\n", "selectit.modelz"),
        ("data:\n  inptu: x.json\n", "data.inptu"),
        ("experimnt: x\n", "experimnt"),
    ],
)
def test_unknown_key_is_rejected(tmp_path: Path, text: str, field: str) -> None:
    message = _load_error(tmp_path, text)
    assert field in message
    assert "Extra inputs are not permitted" in message


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("selectit:\n  k: five\n", "selectit.k"),
        ("selectit:\n  models: gemma\n", "selectit.models"),
        ("selectit:\n  normalization: fancy\n", "selectit.normalization"),
        ("selection:\n  fraction: 1.5\n", "selection.fraction"),
        ("data:\n  on_invalid: ignore\n", "data.on_invalid"),
    ],
)
def test_wrong_type_or_value_is_rejected(tmp_path: Path, text: str, field: str) -> None:
    assert field in _load_error(tmp_path, text)


def test_weights_must_match_models() -> None:
    with pytest.raises(ValidationError, match="1 weights given for 2 models"):
        SelectITConfig(models=["a", "b"], weights=[1.0])
    assert SelectITConfig(models=["a", "b"], weights=[1.0, 2.0]).weights == [1.0, 2.0]


def test_at_least_one_model() -> None:
    with pytest.raises(ValidationError, match="models"):
        SelectITConfig(models=[])
