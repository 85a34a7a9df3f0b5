"""Tests for the shipped YAML recipes and config validation (selectune.config)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from selectune.config import PipelineConfig, SelectionConfig, SelectITConfig, load_config
from tests.fixtures import RECIPES

RECIPE_FILES = sorted(RECIPES.glob("*.yaml"))


def test_recipes_exist() -> None:
    assert RECIPE_FILES, "no deployments/recipes/*.yaml found"


@pytest.mark.parametrize("recipe", RECIPE_FILES, ids=lambda p: p.name)
def test_recipe_loads(recipe: Path) -> None:
    if recipe.name.startswith("experiment-"):  # pipeline recipes plus arms and seeds (tests/unit/test_experiment.py)
        from selectune.experiment import load_experiment

        cfg = load_experiment(recipe)[0]
    else:
        cfg = load_config(recipe)
    assert isinstance(cfg, PipelineConfig)
    assert cfg.selectit.models
    assert cfg.experiment != PipelineConfig().experiment  # each recipe names its own experiment
    data = Path(cfg.data.input)  # read from the recipe's folder: there, or the shared data beside the checkout
    assert data.exists() or "shared" in data.parts, data


def test_no_config_means_defaults() -> None:
    assert load_config(None) == PipelineConfig()


def test_empty_recipe_means_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing here\n", encoding="utf-8")
    assert load_config(path) == PipelineConfig()


def test_recipe_values_are_applied(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("experiment: x\nselectit:\n  models: [a, b]\n  weights: [1, 3]\n  rating_scale: 7\n"
                    "selection:\n  top_k: 10\n", encoding="utf-8")
    cfg = load_config(path)
    assert cfg.experiment == "x"
    assert cfg.selectit.models == ["a", "b"] and cfg.selectit.weights == [1.0, 3.0] and cfg.selectit.rating_scale == 7
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
        ("selectit:\n  rating_scale: five\n", "selectit.rating_scale"),
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


def test_old_field_names_still_load_with_a_warning(tmp_path: Path) -> None:
    old = tmp_path / "old.yaml"
    old.write_text("selectit:\n  k: 7\n  alpha: 0.5\n  max_length: 64\nselection:\n  k: 10\n  min_length: 3\n"
                   "  max_length: 90\nreflection:\n  student:\n    max_length: 48\ntune:\n  max_length: 128\n"
                   "judge:\n  alpha: 0.1\n  beta: 1.5\n  max_length: 256\n", encoding="utf-8")
    new = tmp_path / "new.yaml"
    new.write_text("selectit:\n  rating_scale: 7\n  std_penalty: 0.5\n  max_tokens: 64\nselection:\n  top_k: 10\n"
                   "  min_chars: 3\n  max_chars: 90\nreflection:\n  student:\n    max_tokens: 48\ntune:\n"
                   "  max_tokens: 128\njudge:\n  ref_free_weight: 0.1\n  kl_weight: 1.5\n  max_tokens: 256\n",
                   encoding="utf-8")
    with pytest.warns(FutureWarning) as caught:
        cfg = load_config(old)
    assert cfg == load_config(new)
    messages = {str(w.message) for w in caught}
    assert ("SelectITConfig: the field 'k' is now 'rating_scale'; the old name is accepted until selectune 0.3"
            in messages)
    assert len(messages) == 11  # one per renamed field


def test_old_and_new_name_together_is_an_error() -> None:
    with pytest.raises(ValidationError, match="both 'k' and 'top_k' given"):
        SelectionConfig(k=3, top_k=4)


def test_relative_paths_are_read_from_the_recipe_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from selectune.core.config import load_stage_config
    from selectune.experiment import load_experiment

    folder = tmp_path / "recipes"
    (folder / "prompts").mkdir(parents=True)
    (folder / "prompts" / "rate.txt").write_text("Rate it from 1 to 5.\n", encoding="utf-8")
    recipe = folder / "r.yaml"
    recipe.write_text("run_dir: runs/a\ndata: {input: ../data/set.json}\n"
                      "selectit: {rating_prompts_file: prompts/rate.txt}\n"
                      "eval: {heldout: hf://owner/name, lm_eval_include_path: /abs/tasks}\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path.parent)  # another working directory
    cfg = load_config(recipe)
    assert cfg.run_dir == str(folder / "runs/a") and cfg.data.input == str(folder / "../data/set.json")
    assert cfg.selectit.rating_prompts_file == str(folder / "prompts/rate.txt")
    assert (cfg.eval.heldout, cfg.eval.lm_eval_include_path) == ("hf://owner/name", "/abs/tasks")  # left alone
    stage = load_stage_config(SelectITConfig, "selectit", recipe)
    assert stage.rating_prompts_file == str(folder / "prompts/rate.txt")
    experiment = folder / "e.yaml"
    experiment.write_text("arms: {a: {data: {input: x.json}}, b: {}}\nseeds: [0]\n", encoding="utf-8")
    base, grid = load_experiment(experiment)
    assert grid.arms["a"]["data"]["input"] == str(folder / "x.json")


def test_the_default_input_is_the_demo_set_shipped_in_the_package() -> None:
    import selectune

    path = Path(PipelineConfig().data.input)
    assert path.is_file() and path.is_relative_to(Path(selectune.__file__).parent)
