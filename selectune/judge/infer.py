"""Using a Self-J judge: expected-value scores, best-of-n and selective instruction following.

A score is the expected value of the judge's next-token distribution over "0".."9" (renormalized over the
ten) after the judge prompt: reference-free by default, with-reference when the pairs carry a reference.
Scoring is batched (length-sorted, left-padded) and computes logits at the last position only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from selectune.judge.labels import digit_probs, sample_responses
from selectune.judge.prompts import expected_score, judge_inputs
from selectune.tracking.registry import LoadedModel, load_model

REFUSAL = ("I am not confident that I can answer this well, so I will not answer it "
           "(judge score {score:.2f} is below the threshold {threshold:g}).")
DEFAULT_MAX_LENGTH = 768


@dataclass
class Judge:
    model: Any
    tokenizer: Any
    template: str
    max_length: int = DEFAULT_MAX_LENGTH
    ref: str = ""
    prompts: tuple[str | None, str | None] = (None, None)  # the prompt texts it was trained with (None: built in)


def load_judge(ref: str, dtype: str | None = None, device: str | None = None, template: str = "auto") -> Judge:
    """A judge adapter folder or ``models:/NAME/VERSION`` (any causal LM alias/path works as an untrained judge);
    ``dtype`` None: the dtype the judge was trained in."""
    from selectune.core.lora import read_meta

    lm = load_model(ref, template, dtype, device)
    meta = read_meta(lm.adapter_dir) if lm.adapter_dir else {}
    max_length = meta.get("max_length", DEFAULT_MAX_LENGTH)
    prompts = meta.get("prompts") or {}
    return Judge(lm.model, lm.tokenizer, lm.template, int(max_length), ref,
                 (prompts.get("with_reference"), prompts.get("without_reference")))


def as_judge(lm: LoadedModel, max_length: int = DEFAULT_MAX_LENGTH) -> Judge:
    return Judge(lm.model, lm.tokenizer, lm.template, max_length, lm.ref)


def score_pairs(judge: Judge, df: pd.DataFrame, with_reference: bool | None = None, batch_size: int = 16,
                max_batch_tokens: int | None = None) -> pd.DataFrame:
    """``judge_score`` in [0, 9] and ``judge_probs`` (10 digit probabilities) per row of ``df``.

    Columns: instruction, optional input, response (else output), and reference for with-reference scoring
    (``with_reference`` None: use it when the column exists)."""
    response = "response" if "response" in df.columns else "output"
    missing = [c for c in ("instruction", response) if c not in df.columns]
    if missing:
        raise ValueError(f"judge scoring needs columns {missing} (response or output); have {list(df.columns)}")
    use_ref = "reference" in df.columns if with_reference is None else with_reference
    if use_ref and "reference" not in df.columns:
        raise ValueError(f"with-reference scoring needs a 'reference' column; have {list(df.columns)}")
    inputs = df["input"].fillna("") if "input" in df.columns else [""] * len(df)
    seqs = judge_inputs(judge.tokenizer, judge.template, df["instruction"].astype(str), inputs,
                        df[response].fillna("").astype(str), df["reference"].fillna("").astype(str) if use_ref
                        else None, judge.max_length, judge.prompts)
    probs = digit_probs(judge.model, judge.tokenizer, seqs, batch_size, max_batch_tokens)
    return pd.DataFrame({"judge_score": expected_score(probs), "judge_probs": list(probs)}, index=df.index)


def best_of_n(lm: LoadedModel, judge: Judge, df: pd.DataFrame, n: int, temperature: float = 0.7, top_p: float = 0.95,
              max_new_tokens: int = 128, seed: int = 0, batch_size: int = 16) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Sample ``n`` responses per record and keep the one the judge scores highest (reference-free; ties: the
    lower sample index). Returns (best per record, every sample with its score)."""
    recs = df.assign(input=df["input"].fillna("") if "input" in df.columns else "").reset_index(drop=True)
    samples = sample_responses(lm, recs, n, temperature, top_p, max_new_tokens, seed)
    samples = samples.merge(recs[["id", "instruction", "input"]].drop_duplicates("id"), on="id", how="left")
    samples["judge_score"] = score_pairs(judge, samples, False, batch_size)["judge_score"].to_numpy()
    best = samples.sort_values(["judge_score", "sample"], ascending=[False, True], kind="stable")
    best = best.drop_duplicates("id").set_index("id").loc[recs["id"].drop_duplicates()].reset_index()
    return best, samples


def answer(lm: LoadedModel, judge: Judge, instructions: Sequence[str], inputs: Sequence[str] | None = None,
           threshold: float = 5.0, max_new_tokens: int = 256) -> list[dict[str, Any]]:
    """Selective instruction following: a greedy answer per instruction, declined (a refusal message plus the
    score) when the judge's reference-free score is below ``threshold``."""
    from selectune.core.generate import generate
    from selectune.core.prompts import prompt_ids

    ins = list(inputs) if inputs is not None else [""] * len(instructions)
    prompts = [prompt_ids(lm.template, lm.tokenizer, i, x) for i, x in zip(instructions, ins, strict=True)]
    texts = [g.text.strip() for g in generate(lm.model, lm.tokenizer, prompts, max_new_tokens)]
    scores = score_pairs(judge, pd.DataFrame({"instruction": list(instructions), "input": ins, "response": texts}),
                         False)["judge_score"].to_numpy()
    return [decide(text, float(s), threshold) for text, s in zip(texts, scores, strict=True)]


def decide(text: str, score: float, threshold: float) -> dict[str, Any]:
    """Answer when ``score >= threshold``, else the refusal message (the drafted answer is kept aside)."""
    declined = score < threshold
    return {"answer": REFUSAL.format(score=score, threshold=threshold) if declined else text, "score": score,
            "declined": declined, "threshold": threshold, "draft": text}
