"""The judge reads its rating from single digit tokens."""

from __future__ import annotations

import numpy as np
import pytest

from selectune.judge.prompts import digit_ids


def test_digit_ids_are_single_tokens(tiny_model: str) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    ids = digit_ids(tok)
    assert [tok.decode([i]) for i in ids] == list("0123456789")

    class NoSeven:
        name_or_path = "no-seven"

        def get_vocab(self) -> dict[str, int]:
            return {d: i for i, d in enumerate("012345689")}

    with pytest.raises(ValueError, match="no single token for the digit '7'"):
        digit_ids(NoSeven())


WITH_REF = ("{% macro prompt(question, answer, reference) -%}Q={{ question }} A={{ answer }} R={{ reference }} "
            "Score 0-9:{%- endmacro %}")
FREE = "{% macro prompt(question, answer) -%}Q={{ question }} A={{ answer }} Score 0-9:{%- endmacro %}"


def test_prompt_files_are_rendered_and_checked(tmp_path) -> None:
    from pydantic import ValidationError

    from selectune.judge.config import JudgeConfig
    from selectune.judge.prompts import judge_prompt, prompt_texts

    (tmp_path / "ref.jinja").write_text(WITH_REF, encoding="utf-8")
    (tmp_path / "free.jinja").write_text(FREE, encoding="utf-8")
    cfg = JudgeConfig(prompts={"with_reference": str(tmp_path / "ref.jinja"),
                               "without_reference": str(tmp_path / "free.jinja")})
    texts = prompt_texts(cfg.prompts)
    assert judge_prompt("Add", "2 and 3", "5", "Five.", texts) == "Q=Add\n2 and 3 A=5 R=Five. Score 0-9:"
    assert judge_prompt("Add", "", "5", None, texts) == "Q=Add A=5 Score 0-9:"
    assert judge_prompt("Add", "", "5", None).startswith("Act as a careful")  # built in
    with pytest.raises(ValidationError, match=r"free.jinja: needs a macro prompt\(question, answer, reference\)"):
        JudgeConfig(prompts={"with_reference": str(tmp_path / "free.jinja")})


def test_a_trained_judge_keeps_its_prompts(tiny_model: str, records, tmp_path) -> None:
    from selectune.judge.config import JudgeConfig
    from selectune.judge.infer import load_judge, score_pairs
    from selectune.judge.train import train_judge
    from tests.unit.judge.helpers import pairs_of

    (tmp_path / "free.jinja").write_text(FREE, encoding="utf-8")
    labels = pairs_of(records).assign(id=records["id"], sample=0, digit=7)
    cfg = JudgeConfig(base=tiny_model, max_steps=2, batch_size=6, grad_accum=1, save_steps=1000, dtype="float32",
                      prompts={"without_reference": str(tmp_path / "free.jinja")})
    res = train_judge(cfg, labels, tmp_path / "run")
    judge = load_judge(str(res.adapter_dir), dtype="float32")
    assert judge.prompts == (None, FREE)
    plain = load_judge(str(res.adapter_dir), dtype="float32")
    plain.prompts = (None, None)
    assert not np.allclose(score_pairs(judge, labels, False)["judge_score"],
                           score_pairs(plain, labels, False)["judge_score"])
