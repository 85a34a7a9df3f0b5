"""SelectIT ``fidelity: official`` against the released scripts: the prompt file read with readlines(), the first
k = 5 prompts, the executed normalization, the token-level ablation, and a reproduction of the released
sentence-level script through the CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from selectune.core.config import load_stage_config
from selectune.selectit.config import SelectITConfig
from selectune.selectit.rater import build_texts, rating_prompts
from tests.fixtures import SHARED_DATA
from tests.fixtures.official_selectit import official_sentence_scores, official_texts

OFFICIAL_PROMPTS = SHARED_DATA / "selectit_official_rating_prompts.txt"


@pytest.fixture
def nine_lines(tmp_path: Path) -> Path:
    """Nine prompts, no newline after the last (as the official file)."""
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(f"Prompt {i}: rate from 1 to 5." for i in range(9)), encoding="utf-8")
    return path


def triples(records: pd.DataFrame) -> list[tuple[str, str, str]]:
    return list(zip(records["instruction"], records["input"], records["output"], strict=True))


def test_official_mode_rates_with_the_first_five_lines_as_readlines_gives_them(nine_lines: Path) -> None:
    official = rating_prompts(SelectITConfig(fidelity="official", rating_prompts_file=str(nine_lines)))
    assert official == [f"Prompt {i}: rate from 1 to 5.\n" for i in range(5)]
    ours = rating_prompts(SelectITConfig(rating_prompts_file=str(nine_lines)))
    assert ours == [f"Prompt {i}: rate from 1 to 5." for i in range(9)]
    assert len(rating_prompts(SelectITConfig(rating_prompts_file=str(nine_lines), num_prompts=3))) == 3
    with pytest.raises(ValueError, match="has only 9 rating prompts"):
        rating_prompts(SelectITConfig(rating_prompts_file=str(nine_lines), num_prompts=10))


def test_official_mode_counts_blank_lines_as_readlines_does(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("A\n\nB\nC\nD\nE\n", encoding="utf-8")
    assert rating_prompts(SelectITConfig(fidelity="official", rating_prompts_file=str(path))) == [
        "A\n", "\n", "B\n", "C\n", "D\n"]
    assert rating_prompts(SelectITConfig(rating_prompts_file=str(path))) == ["A", "B", "C", "D", "E"]


def test_official_text_has_the_blank_line_after_the_prompt(nine_lines: Path, records: pd.DataFrame) -> None:
    prompts = rating_prompts(SelectITConfig(fidelity="official", rating_prompts_file=str(nine_lines)))
    texts = build_texts(records, prompts, "official", None)[0]
    assert texts == official_texts(nine_lines, triples(records), 5)
    assert texts[0].startswith("Prompt 0: rate from 1 to 5.\n\nInstruction:What is the capital of France?\n")


@pytest.mark.skipif(not OFFICIAL_PROMPTS.is_file(), reason="needs ../shared/data (the official prompt file)")
def test_official_prompt_file_byte_for_byte(records: pd.DataFrame) -> None:
    prompts = rating_prompts(SelectITConfig(fidelity="official", rating_prompts_file=str(OFFICIAL_PROMPTS)))
    assert len(prompts) == 5 and all(p.endswith(".\n") for p in prompts)
    texts = build_texts(records, prompts, "official", None)[0]
    assert [t.encode() for t in texts] == [t.encode() for t in official_texts(OFFICIAL_PROMPTS, triples(records), 5)]


def test_official_defaults_fill_only_fields_not_given(tmp_path: Path) -> None:
    cfg = SelectITConfig(fidelity="official")
    assert (cfg.num_prompts, cfg.normalization, cfg.layout, cfg.rating_scale) == (5, "official", "official", 5)
    assert SelectITConfig(fidelity="official", normalization="paper").normalization == "paper"
    assert SelectITConfig().normalization == "paper" and SelectITConfig().num_prompts is None
    recipe = tmp_path / "r.yaml"
    recipe.write_text("selectit:\n  layout: chat\n  std_penalty: 0.5\n", encoding="utf-8")
    cfg = load_stage_config(SelectITConfig, "selectit", recipe, fidelity="official")
    assert (cfg.fidelity, cfg.normalization, cfg.num_prompts) == ("official", "official", 5)
    assert (cfg.layout, cfg.std_penalty) == ("chat", 0.5)  # given in the recipe: kept


def test_official_mode_refuses_a_prompt_count_the_released_formula_cannot_take() -> None:
    with pytest.raises(ValidationError, match=r"range\(k\)"):
        SelectITConfig(fidelity="official", num_prompts=3)
    assert SelectITConfig(fidelity="official", num_prompts=3, sentence_level=False).num_prompts == 3
    assert SelectITConfig(num_prompts=3).num_prompts == 3


def test_token_level_ablation_draws_one_prompt_for_the_dataset(nine_lines: Path) -> None:
    lines = nine_lines.read_text(encoding="utf-8").split("\n")
    for seed in (0, 1, 7):
        cfg = SelectITConfig(rating_prompts_file=str(nine_lines), sentence_level=False, prompt_seed=seed)
        assert rating_prompts(cfg) == [random.Random(seed).choice(lines)]
    picks = {rating_prompts(SelectITConfig(rating_prompts_file=str(nine_lines), sentence_level=False,
                                           prompt_seed=s))[0] for s in range(20)}
    assert len(picks) > 3  # the seed matters; all nine lines are candidates, not only the first five
    cfg = SelectITConfig(fidelity="official", rating_prompts_file=str(nine_lines), sentence_level=False)
    assert rating_prompts(cfg)[0].endswith("\n") or rating_prompts(cfg)[0] == lines[-1]


def test_cli_official_reproduces_the_released_sentence_level_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model: str, records: pd.DataFrame, nine_lines: Path
) -> None:
    from selectune.cli.main import app

    monkeypatch.setenv("SELECTUNE_HOME", str(tmp_path / "home"))
    data = tmp_path / "data.json"
    data.write_text(json.dumps(records[["instruction", "input", "output"]].to_dict(orient="records")))
    out = tmp_path / "scored.parquet"
    result = CliRunner().invoke(app, ["score", "selectit", "--fidelity", "official", "--rating-prompts",
                                      str(nine_lines), "--model", tiny_model, "--dtype", "float32", "--no-cache",
                                      "--input", str(data), "--output", str(out)])
    assert result.exit_code == 0, result.output
    ours = pd.read_parquet(out)
    assert all(len(t) == 5 for t in ours[f"selectit_token.{Path(tiny_model).name}"])
    reference = official_sentence_scores(tiny_model, nine_lines, triples(records))
    assert np.abs(reference).min() > 0
    np.testing.assert_allclose(ours["selectit_score"].to_numpy(), reference, rtol=1e-3)
    paper = SelectITConfig(rating_prompts_file=str(nine_lines), models=[tiny_model], dtype="float32")
    assert paper.normalization == "paper" and len(rating_prompts(paper)) == 9  # the default mode differs
