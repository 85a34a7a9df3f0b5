"""Pairwise win-rate: the verdict parser, both orders cancelling a position bias, parse failures counted, and the
three judges (a local LM, an OpenAI-compatible endpoint on 127.0.0.1, a Self-J judge)."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from selectune.evaluation.winrate import APIJudge, LMJudge, SelfJJudge, parse_verdict, score, win_rates
from tests.fixtures.openai_server import FakeOpenAI

ITEMS = pd.DataFrame({"id": ["q1", "q2", "q3"], "instruction": ["What is the capital of France?", "Add two and three.",
                                                                 "Name a color."],
                      "input": ["", "", ""], "output": ["Paris.", "5", "red"]})
GOOD = ["Paris is the capital.", "2 + 3 = 5", "red"]
BAD = ["Rome.", "six", "a python function"]


@pytest.mark.parametrize(("text", "verdict"), [
    ("[[A]]", "A"), ("The better answer is [[B]].", "B"), ("C", "C"), ("A. Answer A is correct.", "A"),
    ("Verdict: B", "B"), ("answer: c", "C"), ("", None), ("I cannot decide.", None),
    ("[[A]] ... or maybe [[B]]", None), ("Both A and B are fine", None),
])
def test_parse_verdict(text: str, verdict: str | None) -> None:
    assert parse_verdict(text) == verdict


def test_score_from_the_candidates_side() -> None:
    assert [score("A", True), score("B", True), score("C", True), score(None, True)] == [1.0, 0.0, 0.5, None]
    assert [score("A", False), score("B", False)] == [0.0, 1.0]


def _judge_reply(prompt: str) -> str:
    """Prefers the answer that contains the reference; always 'A' for the color question (a position bias); no
    verdict at all when the first answer is 'six'."""
    ref = re.search(r"\[Reference answer\]\n(.*?)\n", prompt).group(1).strip(".")
    a = re.search(r"\[Answer A\]\n(.*?)\n\n\[Answer B\]", prompt, re.S).group(1)
    if "color" in prompt:
        return "[[A]]"
    if a == "six":
        return "Hard to say."
    return "[[A]]" if ref in a else "[[B]]"


def test_api_judge_both_orders_position_bias_and_parse_failures(tmp_path, monkeypatch) -> None:
    from selectune.reflection.config import TeacherConfig
    from selectune.reflection.teachers.base import make_teacher

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeOpenAI(reply=_judge_reply) as srv:
        teacher = make_teacher(TeacherConfig(backend="openai", model="judge", base_url=srv.url,
                                             temperature=0.0, max_new_tokens=16, max_retries=0),
                               tmp_path / "teacher.sqlite")
        res = win_rates(APIJudge(teacher), ITEMS, GOOD, BAD)
        assert srv.stats()["total"] == 6  # three items, both orders
    assert res["winrate"].tolist() == [1.0, 1.0, 0.5]  # q3: 'A' in both orders -> one win, one loss
    assert res["verdict_candidate_first"].tolist() == ["A", "A", "A"]
    assert res["verdict_baseline_first"].fillna("none").tolist() == ["B", "none", "A"]  # 'six' first: no verdict
    assert res["parse_failures"].tolist() == [0, 1, 0] and res.loc[1, "raw_baseline_first"] == "Hard to say."
    assert res["orders_agree"].fillna(-1).tolist() == [1.0, -1, 0.0]  # q3 followed the position


def test_an_item_without_any_verdict_is_left_out(tmp_path, monkeypatch) -> None:
    from selectune.reflection.config import TeacherConfig
    from selectune.reflection.teachers.base import make_teacher

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeOpenAI(reply=lambda prompt: "no idea") as srv:
        teacher = make_teacher(TeacherConfig(backend="openai", model="judge", base_url=srv.url,
                                             max_retries=0), None)
        res = win_rates(APIJudge(teacher), ITEMS, GOOD, BAD)
    assert res["winrate"].isna().all() and res["parse_failures"].tolist() == [2, 2, 2]


def test_local_lm_judge_reads_a_b_c(tiny_model: str) -> None:
    from selectune.tracking.registry import load_model

    lm = load_model(tiny_model, dtype="float32")
    judge = LMJudge(lm.model, lm.tokenizer, lm.template, batch_size=2)
    verdicts = judge.verdicts(ITEMS, GOOD, BAD)
    assert [v for v, _ in verdicts] and all(v in "ABC" for v, _ in verdicts)
    assert all(raw.startswith("A=") for _, raw in verdicts)
    alone = [LMJudge(lm.model, lm.tokenizer, lm.template).verdicts(ITEMS.iloc[[i]], GOOD[i:i + 1], BAD[i:i + 1])[0]
             for i in range(3)]
    assert [v for v, _ in alone] == [v for v, _ in verdicts]  # batched == one at a time
    res = win_rates(judge, ITEMS, GOOD, BAD)
    assert res["parse_failures"].sum() == 0 and res["winrate"].between(0, 1).all()


def test_self_j_judge_scores_each_answer_once(tiny_model: str) -> None:
    from selectune.judge.infer import load_judge

    judge = SelfJJudge(load_judge(tiny_model, "float32"))
    res = win_rates(judge, ITEMS, GOOD, BAD)
    assert res["verdict_baseline_first"].isna().all() and res["parse_failures"].sum() == 0
    assert res["orders_agree"].isna().all()  # one order only: nothing to agree with
    assert set(res["winrate"]) <= {0.0, 0.5, 1.0}
    same = win_rates(judge, ITEMS, GOOD, GOOD)
    assert same["winrate"].tolist() == [0.5, 0.5, 0.5]  # identical answers tie
