"""Teacher backends for reflection recycling: chat messages in, text and token usage out.

Every backend shares one disk cache (SQLite, committed after each finished call, so a killed run resumes
without repeating finished calls) and one budget (``max_calls`` new calls, ``max_cost`` estimated USD).
``complete`` never raises for a failed request: it returns a Completion with ``error`` set.

hf backend determinism: each request samples with its own torch.Generator seeded from ``cfg.seed`` and the
request's cache key, so its text does not depend on batch neighbours or order; greedy (temperature 0) does
not sample at all. What can still differ between a batched and a lone run is float rounding from padding
(left padding with masked positions), which can flip a near-tie between two tokens.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selectune.core.cache import Cache, cache_key
from selectune.reflection.config import TeacherConfig

Messages = list[dict[str, str]]
Steps = tuple[tuple[str, tuple[str, ...]], ...]  # (prefill, closing markers) per part of a reply: see HFTeacher
Record = Callable[[str, "Completion"], None]
CHARS_PER_TOKEN = 4  # rough count for API prompts (and replies without usage): ceil(characters / 4)


@dataclass(frozen=True)
class Completion:
    text: str  # "" when error is set
    prompt_tokens: int
    completion_tokens: int
    cached: bool  # served from the on-disk cache
    error: str | None = None  # e.g. "budget: max_calls reached", "HTTP 500 after 6 retries: ..."
    usage_estimated: bool = False  # the endpoint sent no usage: tokens counted as characters / 4
    finish_reason: str = ""  # "stop", "length" (cut off by max_new_tokens), or the endpoint's; "" = not reported
    seconds: float = 0.0  # wall time of the call (hf: of its generate calls), retries included; 0 when cached
    retries: int = 0  # failed attempts before this reply (openai)


@dataclass
class Usage:
    """Running totals of one teacher. ``calls`` are new (uncached) requests sent, each once however many
    retries it took; ``skipped`` were stopped by the budget; ``cost`` is estimated from ``prices``."""

    calls: int = 0
    cached: int = 0
    failed: int = 0
    skipped: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: int = 0
    cost: float = 0.0


def approx_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def price(prices: dict[str, float] | None, prompt_tokens: int, completion_tokens: int) -> float:
    """USD for a call given ``prices`` {input, output} per 1M tokens (0 without prices)."""
    if not prices:
        return 0.0
    return (prompt_tokens * prices.get("input", 0.0) + completion_tokens * prices.get("output", 0.0)) / 1e6


COMPLETIONS = ("completions", ("teacher TEXT", "text TEXT", "prompt_tokens INTEGER", "completion_tokens INTEGER",
                               "usage_estimated INTEGER", "finish_reason TEXT"))  # finished replies, never errors


def completion_cache(path: str | Path) -> Cache:
    return Cache(path, *COMPLETIONS)


def cached_completions(cache: Cache, keys: Sequence[str]) -> dict[str, Completion]:
    rows = cache.get_many(keys).items()
    return {k: Completion(text, p, c, True, None, bool(est), fin) for k, (_, text, p, c, est, fin) in rows}


def check_requests(requests: Sequence[Messages]) -> None:
    """Each request must be a non-empty list of {role, content} string dicts."""
    for i, msgs in enumerate(requests):
        if not isinstance(msgs, list) or not msgs:
            raise ValueError(f"teacher request {i}: expected a non-empty list of chat messages, got {type(msgs)}")
        for j, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise ValueError(f"teacher request {i}, message {j}: expected {{'role': str, 'content': str}}")


def teacher_id(cfg: TeacherConfig) -> str:
    """Stable identity used in cache keys (never contains the API key)."""
    if cfg.backend == "openai":
        if not cfg.base_url:
            raise ValueError("teacher backend 'openai' needs base_url (e.g. https://api.openai.com/v1)")
        return f"openai:{cfg.base_url.rstrip('/')}|{cfg.model}"
    from selectune.core.models import fingerprint

    penalty = repetition_penalty(cfg)
    extra = f"|repetition_penalty={penalty:g}" if penalty != 1 else ""
    return f"{cfg.backend}:{fingerprint(cfg.model)}|{cfg.dtype}{extra}"


def repetition_penalty(cfg: TeacherConfig) -> float:
    """The hf teacher's repetition penalty: as configured, else 1.2 under 1B parameters (small models loop)."""
    if cfg.repetition_penalty is not None:
        return cfg.repetition_penalty
    from selectune.core.models import count_parameters

    return 1.2 if count_parameters(cfg.model) < 1e9 else 1.0


def request_key(tid: str, messages: Messages, cfg: TeacherConfig, steps: Steps | None = None, attempt: int = 0,
                ) -> str:
    """The cache key of one request: teacher, messages, decoding, and (when used) prefill steps and retry number."""
    blob = json.dumps(messages, sort_keys=True, ensure_ascii=False)
    extra = ([json.dumps(steps)] if steps else []) + ([f"attempt={attempt}"] if attempt else [])
    return cache_key(tid, blob, cfg.temperature, cfg.top_p, cfg.max_new_tokens, cfg.seed, *extra)


class Teacher:
    """Cache, budget and usage bookkeeping; backends implement ``_generate``."""

    id: str
    uses_steps = False  # whether the backend prefills the reply (then steps are part of the cache key)

    def __init__(self, cfg: TeacherConfig, cache_path: Path | None) -> None:
        if cfg.max_cost is not None and not cfg.prices:
            raise ValueError("teacher.max_cost needs teacher.prices ({input: USD, output: USD} per 1M tokens)")
        self.cfg = cfg
        self.usage = Usage()
        self.cache = completion_cache(cache_path) if cache_path is not None else None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r})"

    def complete(self, requests: Sequence[Messages], progress: bool = True, steps: Sequence[Steps] | None = None,
                 attempt: int = 0) -> list[Completion]:
        """One Completion per request, in order; failures and budget stops are reported in ``error``. ``steps``:
        per request, the reply's parts for backends that prefill (ignored by the others); ``attempt`` > 0 asks
        again (a retry after an unusable reply) under its own cache key."""
        from tqdm.auto import tqdm

        check_requests(requests)
        parts = list(steps) if steps is not None and self.uses_steps else [()] * len(requests)
        keys = [request_key(self.id, msgs, self.cfg, st, attempt) for msgs, st in zip(requests, parts, strict=True)]
        done = cached_completions(self.cache, sorted(set(keys))) if self.cache else {}
        self.usage.cached += sum(k in done for k in keys)
        todo: dict[str, tuple[Messages, Steps]] = {}
        for key, msgs, st in zip(keys, requests, parts, strict=True):
            if key not in done:
                todo.setdefault(key, (msgs, st))

        def record(key: str, c: Completion) -> None:
            with self._lock:
                if c.error is None:
                    self.usage.prompt_tokens += c.prompt_tokens
                    self.usage.completion_tokens += c.completion_tokens
                    self.usage.estimated += c.usage_estimated
                    self.usage.cost += price(self.cfg.prices, c.prompt_tokens, c.completion_tokens)
                    if self.cache is not None:
                        self.cache.put_many([(key, self.id, c.text, c.prompt_tokens, c.completion_tokens,
                                              int(c.usage_estimated), c.finish_reason)])
                elif c.error.startswith("budget:"):
                    self.usage.skipped += 1
                else:
                    self.usage.failed += 1
                done[key] = c

        if todo:
            with tqdm(total=len(todo), desc=f"teacher {self.cfg.model}", disable=not progress) as bar:
                self._generate(list(todo.items()), record, bar)
        return [done[k] for k in keys]

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()

    def _admit(self) -> str | None:
        """Reserve one new call, or say which budget stops it."""
        with self._lock:
            if self.cfg.max_calls is not None and self.usage.calls >= self.cfg.max_calls:
                return f"budget: max_calls {self.cfg.max_calls} reached"
            if self.cfg.max_cost is not None and self.usage.cost >= self.cfg.max_cost:
                return f"budget: max_cost ${self.cfg.max_cost:g} reached (spent ${self.usage.cost:.6g})"
            self.usage.calls += 1
            return None

    def _generate(self, todo: list[tuple[str, tuple[Messages, Steps]]], record: Record, bar: Any) -> None:
        raise NotImplementedError


def make_teacher(cfg: TeacherConfig, cache_path: Path | None, api_key: str | None = None) -> Teacher:
    """The configured backend; ``cache_path`` None disables the disk cache; ``api_key`` (openai) is used when
    ``$api_key_env`` is unset. Raises on configuration errors."""
    if cfg.backend == "openai":
        from selectune.reflection.teachers.openai_compat import OpenAITeacher

        return OpenAITeacher(cfg, cache_path, api_key)
    if cfg.backend == "vllm":
        from selectune.reflection.teachers.hf import VLLMTeacher

        return VLLMTeacher(cfg, cache_path)
    from selectune.reflection.teachers.hf import HFTeacher

    return HFTeacher(cfg, cache_path)


def estimate(requests: Sequence[Messages], cfg: TeacherConfig, cache_path: Path | None = None,
             steps: Sequence[Steps] | None = None) -> dict[str, Any]:
    """Dry run: new calls, their prompt tokens (hf, vllm: the model's tokenizer and chat template; openai: characters
    of all message contents / 4, rounded up per request), max completion tokens (max_new_tokens per call) and
    the cost bound from ``prices``. Requests already in the cache are listed (``cached_indices``), not counted."""
    check_requests(requests)
    tid = teacher_id(cfg)
    local = cfg.backend in ("hf", "vllm")
    parts = list(steps) if steps is not None and local and cfg.prefill else [()] * len(requests)
    keys = [request_key(tid, msgs, cfg, st) for msgs, st in zip(requests, parts, strict=True)]
    hits = {}
    if cache_path is not None and Path(cache_path).is_file():
        cache = completion_cache(cache_path)
        hits = cached_completions(cache, sorted(set(keys)))
        cache.close()
    new: dict[str, Messages] = {}
    for key, msgs in zip(keys, requests, strict=True):
        if key not in hits:
            new.setdefault(key, msgs)
    if local:
        from selectune.reflection.teachers.hf import HFTeacher

        counter = HFTeacher(cfg, None)
        prompt_tokens = sum(len(counter.prompt_ids(m)) for m in new.values())
    else:
        prompt_tokens = sum(approx_tokens("".join(x["content"] for x in m)) for m in new.values())
    max_completion = len(new) * cfg.max_new_tokens
    return {"requests": len(requests), "calls": len(new), "cached": sum(k in hits for k in keys),
            "cached_indices": [i for i, k in enumerate(keys) if k in hits], "prompt_tokens": prompt_tokens,
            "max_completion_tokens": max_completion, "cost": price(cfg.prices, prompt_tokens, max_completion),
            "token_count": "tokenizer" if local else f"characters/{CHARS_PER_TOKEN}"}
