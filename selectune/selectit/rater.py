"""SelectIT rating of a record table: each rater is loaded, run and released in turn.

A rater reads the next-token probabilities of the digits "1".."K" after every (rating prompt, record) text with
the last-token engine (:mod:`selectune.core.lm`); probabilities are cached per record x rater x prompt x K x
layout x dtype x length policy (:func:`rating_cache`), committed batch by batch. :func:`combine` turns them into
token, sentence and model level scores (:mod:`selectune.selectit.scores`)."""

from __future__ import annotations

import logging
import time
import weakref
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from selectune.core import lm, models
from selectune.core.cache import Cache, cache_key
from selectune.core.prompts import chat_frame
from selectune.core.settings import device as best_device
from selectune.core.settings import resolve_dtype
from selectune.selectit import prompts as rating
from selectune.selectit import scores
from selectune.selectit.config import SelectITConfig

log = logging.getLogger(__name__)
RATINGS = ("ratings", ("probs BLOB", "truncated INTEGER", "n_tokens INTEGER"))  # cache table: float64 probabilities


def rating_cache(path: str | Path | None = None) -> Cache:
    """The SelectIT rating cache (default ``$SELECTUNE_HOME/cache/selectit.sqlite``): one row per record x rater x
    rating prompt x K x layout x dtype x length policy."""
    from selectune.core.settings import home

    return Cache(path or home() / "cache" / "selectit.sqlite", *RATINGS)


def open_rating_cache(cfg: SelectITConfig) -> AbstractContextManager[Cache | None]:
    """``with open_rating_cache(cfg) as cache``: the rating cache, closed afterwards; None when ``use_cache`` is off."""
    return rating_cache() if cfg.use_cache else nullcontext()


def rating_token_ids(tokenizer: object, k: int) -> list[int]:
    """Ids of the rating tokens "1".."K"."""
    return lm.digit_token_ids(tokenizer, [str(r) for r in range(1, k + 1)], "rating")


@dataclass
class RaterResult:
    """One rater's ratings: probabilities ``[N, R, K]`` and per-rating bookkeeping."""

    key: str
    probs: np.ndarray
    truncated: np.ndarray  # [N, R] bool
    n_params: int
    cache_hits: int = 0
    computed: int = 0
    tokens: int = 0  # prompt tokens run through the model (not cached ones)
    seconds: float = 0.0
    fingerprint: str = ""
    engine: dict[str, Any] = field(default_factory=dict)  # vLLM engine settings (backend vllm)


@dataclass
class ScoreReport:
    table: pd.DataFrame
    raters: list[RaterResult] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        return rater_metrics(len(self.table), self.raters)


def rater_metrics(n_records: int, raters: list[Any]) -> dict[str, float]:
    """Per rater (a :class:`RaterResult` or a file's totals): cache hits, ratings computed, seconds, ratings/s."""
    out: dict[str, float] = {"records": float(n_records)}
    for r in raters:
        out[f"{r.key}.cache_hits"] = r.cache_hits
        out[f"{r.key}.computed"] = r.computed
        out[f"{r.key}.seconds"] = round(r.seconds, 3)
        if r.seconds > 0:
            out[f"{r.key}.ratings_per_s"] = round(r.computed / r.seconds, 3)
    out["cache_hits"] = sum(r.cache_hits for r in raters)
    out["ratings_computed"] = sum(r.computed for r in raters)
    return out


def rating_prompts(cfg: SelectITConfig) -> list[str]:
    """The rating prompts in use: the file's or the built-in ones, chosen by num_prompts / sentence_level."""
    official = cfg.fidelity == "official"
    if cfg.rating_prompts_file:
        pool = rating.load_rating_prompts(cfg.rating_prompts_file, keep_newlines=official)
    else:
        if official:
            log.warning("SelectIT fidelity official without rating_prompts_file: the official prompt file "
                        "(data/rating_prompt.txt of github.com/Blue-Raincoat/SelectIT) is not bundled; rating "
                        "with selectune's own prompts in the official layout")
        pool = rating.default_rating_prompts(cfg.rating_scale, keep_newlines=official)
    return rating.choose_prompts(pool, cfg.num_prompts, cfg.sentence_level, cfg.prompt_seed,
                                 cfg.rating_prompts_file or "the built-in prompts")


def build_texts(df: pd.DataFrame, prompts: list[str], layout: str, tokenizer: object) -> tuple[list[str], str]:
    """Rating texts in record-major order (N * R) and the tail that truncation must keep."""
    texts = [rating.official_prompt(p, ins, inp, out)
             for ins, inp, out in zip(df["instruction"], df["input"], df["output"], strict=True) for p in prompts]
    if layout == "official":
        return texts, rating.ANSWER_SUFFIX
    before, after = chat_frame(tokenizer)
    return [before + t + after for t in texts], rating.ANSWER_SUFFIX + after


def too_long(df: pd.DataFrame, index: int, n_prompts: int, err: Any) -> ValueError:
    """The error of a record over selectit.max_tokens under ``truncation: error``, naming the record; ``index`` is
    the rating text's position in :func:`build_texts`' record-major order."""
    row, prompt = divmod(index, n_prompts)
    rec = df.iloc[row]
    return ValueError(f"record {rec['id']} (row {row + 1}, instruction {str(rec['instruction'])[:60]!r}): its "
                      f"instruction, input and output with rating prompt {prompt + 1} take {err.tokens} tokens, over "
                      f"selectit.max_tokens {err.limit}; with selectit.truncation: error over-long records are "
                      "refused (truncation: right cuts the end of the output, keeping the answer cue)")


class Rater:
    """One rater over one table or many chunks of one: ratings come from the cache first, the rest from the model,
    loaded at the first rating the cache lacks and kept until :meth:`close` (then released before the next rater
    loads: peak memory = the largest rater). Uncached ratings run on ``cfg.backend`` (transformers, or vLLM: its
    ratings keyed apart, since its kernels round differently)."""

    def __init__(self, model_name: str, cfg: SelectITConfig, prompts: list[str], cache: Cache | None = None,
                 progress: bool = True, total: int | None = None) -> None:
        self.name, self.cfg, self.prompts, self.cache = model_name, cfg, prompts, cache
        self.vllm = cfg.backend == "vllm"
        self.dtype = resolve_dtype(cfg.dtype, "cuda" if self.vllm else best_device())
        self.fingerprint = models.fingerprint(model_name)
        self.key = models.model_key(model_name)
        self.n_params = models.count_parameters(model_name)
        self.model: Any = None
        self.tok: Any = None
        self.bar = tqdm(total=total, desc=f"SelectIT {self.key}", unit="rating", disable=not progress)

    def __enter__(self) -> Rater:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _load(self) -> None:
        if self.vllm:
            from selectune.core.vllm import load_engine

            self.model = load_engine(self.name, self.dtype, self.cfg.vllm,
                                     trust_remote_code=self.cfg.trust_remote_code)
            self.tok = self.model.tokenizer()
        else:
            self.model, self.tok = models.load_causal_lm(self.name, dtype=self.dtype, device=best_device(),
                                                         trust_remote_code=self.cfg.trust_remote_code,
                                                         attn_implementation=self.cfg.attn_implementation)

    def close(self) -> None:
        self.bar.close()
        if self.model is not None:
            alive = weakref.ref(self.model)
            self.model = None
            models.collect_if_alive(alive)

    def rate(self, df: pd.DataFrame) -> RaterResult:
        """Rating-token probabilities for every (record, prompt) pair of ``df``."""
        cfg, cache, r = self.cfg, self.cache, len(self.prompts)
        n = len(df)
        keys = [cache_key(rid, self.fingerprint, rating.prompt_hash(p), cfg.rating_scale, cfg.layout, self.dtype,
                          cfg.max_tokens, cfg.truncation, *(["vllm"] if self.vllm else []))
                for rid in df["id"] for p in self.prompts]
        cached = cache.get_many(keys) if cache is not None else {}
        probs = np.zeros((n * r, cfg.rating_scale))
        truncated = np.zeros(n * r, dtype=bool)
        for i, key in enumerate(keys):
            if key in cached:
                blob, truncated[i], _ = cached[key]
                probs[i] = np.frombuffer(blob, dtype=np.float64)
        todo = [i for i, key in enumerate(keys) if key not in cached]
        result = RaterResult(self.key, probs, truncated, self.n_params, cache_hits=len(cached),
                             fingerprint=self.fingerprint)
        self.bar.update(len(cached))
        if todo:
            if self.model is None:
                self._load()
            self._compute(df, keys, todo, result)
        result.probs, result.truncated = probs.reshape(n, r, cfg.rating_scale), truncated.reshape(n, r)
        return result

    def _compute(self, df: pd.DataFrame, keys: list[str], todo: list[int], result: RaterResult) -> None:
        cfg, cache, r, probs, truncated = self.cfg, self.cache, len(self.prompts), result.probs, result.truncated
        texts, tail = build_texts(df, self.prompts, cfg.layout, self.tok)
        try:
            enc = lm.encode(self.tok, [texts[i] for i in todo], tail, cfg.max_tokens, cfg.truncation,
                            add_special_tokens=cfg.layout == "official")
        except lm.TooLong as err:
            raise too_long(df, todo[err.row], r, err) from None
        del texts
        seqs = [e.ids for e in enc]

        def commit(done: list[int], p: np.ndarray) -> None:  # ratings todo[j] for j in done -> arrays, cache
            rows = [todo[j] for j in done]
            probs[rows] = p
            truncated[rows] = [enc[j].truncated for j in done]
            if cache is not None:
                cache.put_many((keys[row], probs[row].tobytes(), int(truncated[row]), len(seqs[j]))
                               for row, j in zip(rows, done, strict=True))

        start = time.perf_counter()
        run = _rate_vllm if self.vllm else _rate_hf
        run(self.model, self.tok, seqs, rating_token_ids(self.tok, cfg.rating_scale), cfg, r, [i % r for i in todo],
            commit, self.bar)
        result.seconds = time.perf_counter() - start
        result.computed = len(todo)
        result.tokens = sum(len(s) for s in seqs)
        if self.vllm:
            result.engine = self.model.settings


def rate(df: pd.DataFrame, model_name: str, cfg: SelectITConfig, prompts: list[str],
         cache: Cache | None = None, progress: bool = True) -> RaterResult:
    """One rater over one table (its model released afterwards)."""
    with Rater(model_name, cfg, prompts, cache, progress, len(df) * len(prompts)) as rater:
        return rater.rate(df)


def _rate_hf(model: Any, tok: Any, seqs: list[list[int]], token_ids: list[int], cfg: SelectITConfig, r: int,
             prompt_of: list[int], commit: Any, bar: Any) -> None:
    """Length-sorted batches, one group per rating prompt (its texts share the prompt's tokens as a prefix)."""
    from selectune.core.losses import batch_budget

    budget = batch_budget(model, cfg.max_batch_tokens)
    for q in range(r):
        group = [j for j, p in enumerate(prompt_of) if p == q]
        if group:
            for batch, p in lm.iter_last_token_probs(model, tok, [seqs[j] for j in group], token_ids,
                                                     cfg.batch_size, budget, bar):
                commit([group[b] for b in batch], p)


VLLM_CHUNK = 4096  # ratings per vLLM call: committed to the cache after each, so a killed run keeps them


def _rate_vllm(engine: Any, tok: Any, seqs: list[list[int]], token_ids: list[int], cfg: SelectITConfig, r: int,
               prompt_of: list[int], commit: Any, bar: Any) -> None:
    """One vLLM request per rating text (vLLM batches them and shares prompt prefixes itself)."""
    from selectune.core.vllm import last_token_probs

    for lo in range(0, len(seqs), VLLM_CHUNK):
        done = list(range(lo, min(lo + VLLM_CHUNK, len(seqs))))
        commit(done, last_token_probs(engine, [seqs[j] for j in done], token_ids, progress=False))
        bar.update(len(done))


def score_selectit(df: pd.DataFrame, cfg: SelectITConfig, cache: Cache | None = None,
                   progress: bool = True) -> ScoreReport:
    """Add SelectIT columns to ``df``: the final score, per-model sentence scores, per-prompt details."""
    prompts = rating_prompts(cfg)
    raters = [rate(df, m, cfg, prompts, cache, progress) for m in cfg.models]
    return combine(df, raters, cfg)


def combine(df: pd.DataFrame, raters: list, cfg: SelectITConfig) -> ScoreReport:
    """Token, sentence and model level scores from each rater's rating probabilities (any backend)."""
    weights = list(cfg.weights) if cfg.weights is not None else [float(r.n_params) for r in raters]
    out = df.copy()
    sentence = []
    for r in raters:
        tokens = scores.token_scores(r.probs, cfg.normalization)  # [N, R]
        s = scores.sentence_scores(tokens, cfg.std_penalty)
        sentence.append(s)
        out[f"selectit_sentence.{r.key}"] = s
        out[f"selectit_token.{r.key}"] = list(tokens)
        out[f"selectit_probs.{r.key}"] = [row.tolist() for row in r.probs]
        out[f"selectit_base.{r.key}"] = list(scores.base_ratings(r.probs))
    out["selectit_score"] = scores.model_scores(np.stack(sentence), weights)
    out["selectit_base_rating"] = np.rint(
        np.mean([scores.base_ratings(r.probs).mean(axis=1) for r in raters], axis=0)).astype(int)
    out["selectit_truncated"] = np.any([r.truncated.any(axis=1) for r in raters], axis=0)
    return ScoreReport(out, raters, weights)
