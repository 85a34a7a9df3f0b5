"""Self-J label generation (arXiv 2409.00935): quality labels for sampled responses without human raters.

The model under evaluation samples ``n`` responses per instruction. It then rates each response 0-9 against
the gold reference (the with-reference judge prompt); the self-evaluation score is the expected value of its
next-token distribution over the digit tokens "0".."9" (renormalized over the ten). The rating is recalibrated
by the semantic similarity of response and reference:

    label = (1 - lambda) * self_eval + lambda * 9 * max(cos(response, reference), 0);  digit = round(label)

The judge prompts are in :mod:`selectune.judge.prompts`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from selectune.core.losses import batch_budget
from selectune.core.models import DEFAULT_EMBEDDER
from selectune.core.prompts import prompt_ids
from selectune.judge.config import JudgeConfig
from selectune.judge.prompts import digit_ids, expected_score, judge_inputs, prompt_texts
from selectune.tracking.registry import LoadedModel


def digit_probs(model: Any, tokenizer: Any, seqs: Sequence[Sequence[int]], batch_size: int = 16,
                max_batch_tokens: int | None = None, desc: str = "judge") -> np.ndarray:
    """Distribution over "0".."9" at the last position of each sequence, renormalized over the ten: [n, 10]."""
    from tqdm.auto import tqdm

    from selectune.core.lm import iter_last_token_probs

    out = np.zeros((len(seqs), 10))
    if not len(seqs):
        return out
    with tqdm(total=len(seqs), desc=desc, unit="prompt", leave=False) as bar:
        for rows, probs in iter_last_token_probs(model, tokenizer, seqs, digit_ids(tokenizer), batch_size,
                                                 batch_budget(model, max_batch_tokens, 4096), progress=bar):
            out[rows] = probs
    total = out.sum(1, keepdims=True)
    return np.where(total > 0, out / np.where(total > 0, total, 1), 0.1)  # all ten underflowed: uniform


def make_labels(self_eval: np.ndarray, cosine: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """(label, target digit): label = (1 - lam) * self_eval + lam * 9 * max(cos, 0), digit = round half up."""
    label = (1 - lam) * np.asarray(self_eval, dtype=float) + lam * 9 * np.clip(np.asarray(cosine, dtype=float), 0, None)
    return label, np.clip(np.floor(label + 0.5), 0, 9).astype(int)


def cosines(responses: Sequence[str], references: Sequence[str], embedder: str = DEFAULT_EMBEDDER,
            model: Any = None) -> np.ndarray:
    """Cosine similarity of each response to its reference under a sentence embedder."""
    if model is None:
        from selectune.core.models import load_embedder
        from selectune.core.settings import device

        model = load_embedder(embedder, device())
    texts = sorted(set(responses) | set(references))
    emb = np.asarray(model.encode(texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True))
    row = {t: i for i, t in enumerate(texts)}
    return np.einsum("ij,ij->i", emb[[row[r] for r in responses]], emb[[row[r] for r in references]]).astype(float)


def sample_responses(lm: LoadedModel, df: pd.DataFrame, n: int, temperature: float, top_p: float,
                     max_new_tokens: int, seed: int, batch_size: int = 8) -> pd.DataFrame:
    """``n`` sampled responses per record (columns id, sample, response). Each response has its own generator,
    seeded from (seed, record id, sample index), so it does not depend on its batch neighbours. ``lm.model`` is a
    transformers model or a vLLM engine (:func:`selectune.tracking.registry.load_vllm_model`)."""
    from tqdm.auto import tqdm

    from selectune.core.generate import generate, row_seed
    from selectune.core.vllm import Engine

    prompts = [prompt_ids(lm.template, lm.tokenizer, r.instruction, r.input or "") for r in df.itertuples(index=False)]
    ids = df["id"].astype(str).tolist()
    jobs = [(i, s) for i in range(len(df)) for s in range(n)]
    seeds = [row_seed(seed, ids[i], s) for i, s in jobs]
    if isinstance(lm.model, Engine):
        from selectune.core import vllm

        out = vllm.generate_batch(lm.model, [prompts[i] for i, _ in jobs], max_new_tokens, temperature, top_p, seeds)
    else:
        with tqdm(total=len(jobs), desc=f"sample {Path(lm.ref).name}", unit="response", leave=False) as bar:
            out = generate(lm.model, lm.tokenizer, [prompts[i] for i, _ in jobs], max_new_tokens, batch_size,
                           temperature, top_p, seeds, bar)
    return pd.DataFrame({"id": [ids[i] for i, _ in jobs], "sample": [s for _, s in jobs],
                         "response": [g.text.strip() for g in out]})


def label_records(df: pd.DataFrame) -> pd.DataFrame:
    """The records the labels are made from: id, instruction, input ("" when absent), output (the gold reference)."""
    missing = [c for c in ("id", "instruction", "output") if c not in df.columns]
    if missing:
        raise ValueError(f"judge labels need columns {missing} (output = the gold reference); have {list(df.columns)}")
    return df.assign(input=df["input"].fillna("") if "input" in df.columns else "").reset_index(drop=True)


def sample_for_labels(recs: pd.DataFrame, cfg: JudgeConfig, lm: LoadedModel) -> pd.DataFrame:
    """The configured ``n_samples`` responses per record of :func:`label_records`."""
    return sample_responses(lm, recs, cfg.n_samples, cfg.temperature, cfg.top_p, cfg.max_new_tokens, cfg.seed,
                            cfg.score_batch_size)


def generate_labels(df: pd.DataFrame, cfg: JudgeConfig, lm: LoadedModel, embedder_model: Any = None,
                    samples: pd.DataFrame | None = None) -> pd.DataFrame:
    """Sample, self-evaluate with the reference, recalibrate by cosine: one row per (record, sample) with the
    self-eval distribution (10 probabilities), self_eval, cosine, label and digit. ``samples``: the responses, when
    already sampled on another engine (:func:`sample_for_labels`)."""
    recs = label_records(df)
    if samples is None:
        samples = sample_for_labels(recs, cfg, lm)
    rows = recs.loc[np.repeat(np.arange(len(recs)), cfg.n_samples), ["instruction", "input", "output"]]
    out = pd.concat([samples, rows.reset_index(drop=True).rename(columns={"output": "reference"})], axis=1)
    seqs = judge_inputs(lm.tokenizer, lm.template, out["instruction"], out["input"], out["response"],
                        out["reference"], cfg.max_tokens, prompt_texts(cfg.prompts))
    probs = digit_probs(lm.model, lm.tokenizer, seqs, cfg.score_batch_size, cfg.max_batch_tokens, "self-eval")
    out["self_eval_probs"] = list(probs)
    out["self_eval"] = expected_score(probs)
    out["cosine"] = cosines(out["response"].tolist(), out["reference"].tolist(), cfg.embedder, embedder_model)
    out["label"], out["digit"] = make_labels(out["self_eval"].to_numpy(), out["cosine"].to_numpy(), cfg.lambda_cos)
    return out
