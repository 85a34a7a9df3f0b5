"""Pairwise win-rate: a judge compares two models' answers to every evaluation instruction, in both orders.

Each comparison is a prompt template (:func:`pairwise_prompt`) and a pure parser (:func:`parse_verdict`): the judge
answers A, B or C (tie). Running both orders (A = the candidate, then A = the baseline) and averaging cancels a
judge's preference for a position. An item scores 1 when the candidate wins, 0.5 for a tie, 0 when it loses,
averaged over the orders whose verdict parsed; a verdict that does not parse is counted, never defaulted, and an
item with no parsed verdict is left out.

Judges: any local causal LM reads its next-token probabilities of "A", "B", "C" after the prompt (always parses);
an OpenAI-compatible endpoint replies in text (through the teacher client: retries, cache, budget); a Self-J judge
scores each answer on its own 0-9 scale with the reference, so it has no position and runs once per item.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from selectune.core.prompts import join_instruction

PAIRWISE = ("Act as an impartial judge. Compare two answers to the question below, using the reference answer. "
            "Judge correctness, helpfulness and faithfulness to the question; ignore the length of the answers and "
            "the order in which they appear.\n\n[Question]\n{question}\n\n[Reference answer]\n{reference}\n\n"
            "[Answer A]\n{a}\n\n[Answer B]\n{b}\n\nReply with one letter: A if answer A is better, B if answer B "
            "is better, C if they are equally good.")
LABELS = ("A", "B", "C")
_BRACKETED = re.compile(r"\[\[\s*([ABC])\s*\]\]")
_LEADING = re.compile(r"^\W*(?:verdict|answer|choice)?\W*([ABC])\b", re.IGNORECASE)
_STATED = re.compile(r"\b(?:answer|verdict|choice|option)\s*(?:is|:)?\s*\W?([ABC])\b", re.IGNORECASE)


def pairwise_prompt(instruction: str, input: str | None, reference: str, a: str, b: str) -> str:
    return PAIRWISE.format(question=join_instruction(instruction, input), reference=reference, a=a, b=b)


def parse_verdict(text: str | None) -> str | None:
    """A, B or C from a judge's reply: ``[[X]]`` anywhere, else a reply that starts with the letter, else a stated
    verdict ("the better answer is B"); None when none of these is there."""
    if not text or not text.strip():
        return None
    for pattern in (_BRACKETED, _LEADING, _STATED):
        found = {m.upper() for m in pattern.findall(text)}
        if found:  # the first kind of verdict present decides; two different letters of it: no verdict
            return found.pop() if len(found) == 1 else None
    return None


def score(verdict: str | None, candidate_is_a: bool) -> float | None:
    """1 / 0.5 / 0 for the candidate, or None for an unparsed verdict."""
    if verdict is None:
        return None
    if verdict == "C":
        return 0.5
    return 1.0 if (verdict == "A") == candidate_is_a else 0.0


class PairwiseJudge(Protocol):
    positional: bool  # False: the verdict cannot depend on the order (one run per item suffices)

    def verdicts(self, items: pd.DataFrame, a: Sequence[str], b: Sequence[str]) -> list[tuple[str | None, str]]:
        """(verdict A/B/C or None, raw output) per item for answers ``a`` against ``b``."""


@dataclass
class LMJudge:
    """A local causal LM: the most probable of the tokens "A", "B", "C" after the templated prompt."""

    model: Any
    tokenizer: Any
    template: str
    batch_size: int = 8
    positional: bool = True

    def verdicts(self, items: pd.DataFrame, a: Sequence[str], b: Sequence[str]) -> list[tuple[str | None, str]]:
        from selectune.core.lm import digit_token_ids, iter_last_token_probs
        from selectune.core.losses import batch_budget
        from selectune.core.prompts import adds_special_tokens, prompt_text

        ids = digit_token_ids(self.tokenizer, list(LABELS), "the verdict label")
        texts = [prompt_text(self.template, self.tokenizer, pairwise_prompt(r.instruction, r.input, r.output, x, y))
                 for r, x, y in zip(items.itertuples(index=False), a, b, strict=True)]
        seqs = self.tokenizer(texts, add_special_tokens=adds_special_tokens(self.template))["input_ids"]
        probs = np.zeros((len(seqs), len(LABELS)))
        for rows, p in iter_last_token_probs(self.model, self.tokenizer, seqs, ids, self.batch_size,
                                             batch_budget(self.model, None, 4096)):
            probs[rows] = p
        return [(LABELS[int(p.argmax())], " ".join(f"{k}={v:.4f}" for k, v in zip(LABELS, p, strict=True)))
                for p in probs]


@dataclass
class APIJudge:
    """An OpenAI-compatible endpoint through the teacher client (retries, disk cache, budget); greedy replies."""

    teacher: Any
    positional: bool = True

    def verdicts(self, items: pd.DataFrame, a: Sequence[str], b: Sequence[str]) -> list[tuple[str | None, str]]:
        requests = [[{"role": "user", "content": pairwise_prompt(r.instruction, r.input, r.output, x, y)}]
                    for r, x, y in zip(items.itertuples(index=False), a, b, strict=True)]
        out = []
        for c in self.teacher.complete(requests, progress=False):
            raw = c.text if c.error is None else f"error: {c.error}"
            out.append((parse_verdict(c.text) if c.error is None else None, raw))
        return out


@dataclass
class SelfJJudge:
    """A Self-J judge: each answer's expected 0-9 score with the reference; the higher one wins (equal: tie)."""

    judge: Any
    batch_size: int = 8
    positional: bool = False

    def verdicts(self, items: pd.DataFrame, a: Sequence[str], b: Sequence[str]) -> list[tuple[str | None, str]]:
        from selectune.judge.infer import score_pairs

        frame = lambda answers: pd.DataFrame({"instruction": items["instruction"].to_numpy(),  # noqa: E731
                                              "input": items["input"].fillna("").to_numpy(),
                                              "response": list(answers), "reference": items["output"].to_numpy()})
        sa = score_pairs(self.judge, frame(a), True, self.batch_size)["judge_score"].to_numpy()
        sb = score_pairs(self.judge, frame(b), True, self.batch_size)["judge_score"].to_numpy()
        return [("C" if x == y else "A" if x > y else "B", f"A={x:.4f} B={y:.4f}") for x, y in zip(sa, sb, strict=True)]


def win_rates(judge: PairwiseJudge, items: pd.DataFrame, candidate: Sequence[str], baseline: Sequence[str],
              ) -> pd.DataFrame:
    """Per item: the candidate's score (NaN when no verdict parsed), both orders' verdicts and raw outputs, and
    ``orders_agree``: 1 when both orders name the same winner (or both a tie), 0 when the verdict followed the
    position, NaN unless both orders parsed. A judge that always answers "A" agrees on no item and scores 0.5."""
    first = judge.verdicts(items, candidate, baseline)
    second = judge.verdicts(items, baseline, candidate) if judge.positional else [(None, "")] * len(first)
    rows = []
    for (v1, raw1), (v2, raw2) in zip(first, second, strict=True):
        scores = [s for s in (score(v1, True), score(v2, False) if judge.positional else None) if s is not None]
        agree = float(score(v1, True) == score(v2, False)) if judge.positional and len(scores) == 2 else float("nan")
        rows.append({"winrate": float(np.mean(scores)) if scores else float("nan"), "orders_agree": agree,
                     "verdict_candidate_first": v1, "verdict_baseline_first": v2,
                     "raw_candidate_first": raw1, "raw_baseline_first": raw2,
                     "parse_failures": int(v1 is None) + int(judge.positional and v2 is None)})
    return pd.DataFrame(rows, index=items.index)
