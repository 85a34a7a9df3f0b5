"""OpenAI-compatible teacher: the official client with our own retry loop and a thread pool of ``concurrency``.

Retried (up to ``max_retries``): HTTP 408/409/429/5xx, timeouts, connection errors, malformed JSON, replies
without choices or content. Waits: ``Retry-After`` / ``retry-after-ms`` when the server sends one, else
exponential backoff with full jitter, uniform(0, min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt)).
HTTP 401/403/404 are configuration errors (bad key, model or URL) and raise; other 4xx fail the request.
The API key never leaves the client: not in ``repr``, the cache, logs or raised messages.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import replace
from pathlib import Path
from typing import Any

from selectune.reflection.config import TeacherConfig
from selectune.reflection.teachers.base import Completion, Messages, Record, Steps, Teacher, approx_tokens, teacher_id

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 1.0  # tests shrink these
BACKOFF_MAX_S = 60.0
RETRY_AFTER_MAX_S = 600.0
RETRY_STATUS = {408, 409, 429}
CONFIG_STATUS = {401, 403, 404}


class TeacherConfigError(RuntimeError):
    """The endpoint refuses every request (bad key, unknown model or URL)."""


def api_key(cfg: TeacherConfig, resolved: str | None = None) -> str:
    """The key from ``$api_key_env``, else ``resolved`` (the Prefect layer reads the Secret block ``api_key_secret``
    and passes its value; the library never imports Prefect)."""
    key = os.environ.get(cfg.api_key_env) or resolved
    if key:
        return key
    raise ValueError(f"openai teacher: no API key; set the environment variable {cfg.api_key_env} "
                     "or teacher.api_key_secret (a Prefect Secret block name, read when the pipeline flow runs)")


def retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date), if present."""
    if headers is None:
        return None
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def backoff(attempt: int, after: float | None) -> float:
    """Full-jitter exponential backoff, never shorter than the server's Retry-After."""
    jitter = random.uniform(0, min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt))
    return max(min(after, RETRY_AFTER_MAX_S), jitter) if after is not None else jitter


class OpenAITeacher(Teacher):
    """Any OpenAI-compatible ``/chat/completions`` endpoint."""

    def __init__(self, cfg: TeacherConfig, cache_path: Path | None, key: str | None = None) -> None:
        import openai

        self.id = teacher_id(cfg)
        super().__init__(cfg, cache_path)
        self._key = api_key(cfg, key)
        self._client = openai.OpenAI(base_url=cfg.base_url, api_key=self._key, max_retries=0, timeout=cfg.timeout_s)

    def _clean(self, text: str) -> str:
        return text.replace(self._key, "***")[:500]

    def _generate(self, todo: list[tuple[str, tuple[Messages, Steps]]], record: Record, bar: Any) -> None:
        def work(key: str, msgs: Messages) -> None:
            reason = self._admit()
            record(key, Completion("", 0, 0, False, reason) if reason else self._call(msgs))

        with ThreadPoolExecutor(max_workers=min(self.cfg.concurrency, len(todo))) as pool:
            pending = {pool.submit(work, key, msgs) for key, (msgs, _) in todo}
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                bar.update(len(finished))
                for f in finished:
                    if f.exception() is not None:
                        for p in pending:
                            p.cancel()
                        raise f.exception()

    def _call(self, msgs: Messages) -> Completion:
        """One request with retries; failures come back in ``error``."""
        import openai

        cfg, start = self.cfg, time.perf_counter()
        for attempt in range(cfg.max_retries + 1):
            after: float | None = None
            try:
                resp = self._client.chat.completions.create(
                    model=cfg.model, messages=msgs, temperature=cfg.temperature, top_p=cfg.top_p,
                    max_tokens=cfg.max_new_tokens, seed=cfg.seed)
                return replace(self._parse(resp, msgs), seconds=time.perf_counter() - start, retries=attempt)
            except openai.APIStatusError as err:
                status = err.status_code
                if status in CONFIG_STATUS:
                    raise TeacherConfigError(f"openai teacher {self.id}: HTTP {status}: "
                                             f"{self._clean(err.message)}") from None
                reason = f"HTTP {status}"
                detail = self._clean(err.message)
                if status not in RETRY_STATUS and status < 500:
                    return Completion("", 0, 0, False, f"{reason}: {detail}")
                after = retry_after(err.response.headers)
            except openai.APITimeoutError:
                reason, detail = "timeout", f"no reply within {cfg.timeout_s:g}s"
            except openai.APIConnectionError as err:
                reason, detail = "connection error", self._clean(str(err.__cause__ or err))
            except (openai.APIResponseValidationError, ValueError, AttributeError, KeyError, TypeError,
                    IndexError) as err:  # broken JSON or not a chat completion
                reason, detail = "malformed reply", self._clean(f"{type(err).__name__}: {err}")
            if attempt == cfg.max_retries:
                break
            with self._lock:
                self.usage.retries += 1
            delay = backoff(attempt, after)
            log.warning("teacher %s: %s (%s); retry %d/%d in %.2fs", self.id, reason, detail, attempt + 1,
                        cfg.max_retries, delay)
            time.sleep(delay)
        return Completion("", 0, 0, False, f"{reason} after {cfg.max_retries} retries: {detail}")

    def _parse(self, resp: Any, msgs: Messages) -> Completion:
        """Text and usage of a reply; raises ValueError on a reply that is not a chat completion."""
        if isinstance(resp, str):
            raise ValueError(f"non-JSON reply: {resp[:80]!r}")
        choices = getattr(resp, "choices", None)
        if not choices:
            raise ValueError("reply without choices")
        text = choices[0].message.content
        finish = str(getattr(choices[0], "finish_reason", None) or "")
        if text is None:
            raise ValueError("reply without message content")
        usage = getattr(resp, "usage", None)
        if usage is not None and usage.prompt_tokens is not None and usage.completion_tokens is not None:
            return Completion(text, int(usage.prompt_tokens), int(usage.completion_tokens), False,
                              finish_reason=finish)
        prompt = approx_tokens("".join(m["content"] for m in msgs))
        return Completion(text, prompt, approx_tokens(text), False, usage_estimated=True, finish_reason=finish)
