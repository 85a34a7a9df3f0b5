"""The local teacher backends: a transformers chat model with batched, length-sorted, left-padded generation, or
the same model on a vLLM engine (one request per prompt; vLLM batches them itself).

Each request samples with its own torch.Generator (seeded from the request's cache key, which hashes
``cfg.seed``), so its text does not depend on its batch neighbours; see :mod:`selectune.core.generate`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from selectune.reflection.config import TeacherConfig
from selectune.reflection.teachers.base import (
    Completion,
    Messages,
    Record,
    Steps,
    Teacher,
    repetition_penalty,
    teacher_id,
)


class HFTeacher(Teacher):
    """A local transformers chat model; batched, left-padded, length-sorted generation."""

    def __init__(self, cfg: TeacherConfig, cache_path: Path | None) -> None:
        self.id = teacher_id(cfg)
        self.repetition_penalty = repetition_penalty(cfg)
        super().__init__(cfg, cache_path)
        self._model: Any = None
        self._tok: Any = None

    def tokenizer(self) -> Any:
        if self._tok is None:
            from selectune.core.models import load_tokenizer

            self._tok = load_tokenizer(self.cfg.model, self.cfg.trust_remote_code)
        return self._tok

    @property
    def uses_steps(self) -> bool:  # type: ignore[override]
        return self.cfg.prefill

    def prompt_text(self, messages: Messages) -> str:
        """The chat-templated prompt, ending with the assistant cue."""
        tok = self.tokenizer()
        if not getattr(tok, "chat_template", None):
            raise ValueError(f"teacher model {self.cfg.model!r} has no chat template; use an instruct model")
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def prompt_ids(self, messages: Messages, reply: str = "") -> list[int]:
        """Token ids of the chat-templated prompt, then ``reply`` (the assistant turn so far)."""
        return self.tokenizer()(self.prompt_text(messages) + reply, add_special_tokens=False)["input_ids"]

    def _load(self) -> Any:
        if self._model is None:
            from selectune.core.models import load_causal_lm
            from selectune.core.settings import device, resolve_dtype

            dev = device()
            self._model, self._tok = load_causal_lm(self.cfg.model, resolve_dtype(self.cfg.dtype, dev), dev,
                                                    self.cfg.trust_remote_code, "auto")
        return self._model

    @property
    def batch_size(self) -> int:
        return self.cfg.batch_size

    def _generate_batch(self, prompts: list[list[int]], seeds: list[int], stops: tuple[str, ...]) -> list[Any]:
        from selectune.core.generate import generate_batch

        cfg = self.cfg
        return generate_batch(self._model, self.tokenizer(), prompts, cfg.max_new_tokens, cfg.temperature, cfg.top_p,
                              seeds, stops, self.repetition_penalty)

    def _generate(self, todo: list[tuple[str, tuple[Messages, Steps]]], record: Record, bar: Any) -> None:
        from selectune.core.lm import length_batches

        self._load()
        ids = [self.prompt_ids(msgs) for _, (msgs, _) in todo]
        for batch in length_batches([len(x) for x in ids], self.batch_size, 1 << 62):
            rows = []
            for i in batch:
                reason = self._admit()
                if reason:
                    record(todo[i][0], Completion("", 0, 0, False, reason))
                else:
                    rows.append(i)
            if rows:
                start = time.perf_counter()
                replies = self._reply([todo[i] for i in rows])
                seconds = time.perf_counter() - start
                for i, (text, n_new, finish) in zip(rows, replies, strict=True):
                    record(todo[i][0], Completion(text, len(ids[i]), n_new, False, finish_reason=finish,
                                                  seconds=seconds))
            bar.update(len(batch))

    def _reply(self, jobs: list[tuple[str, tuple[Messages, Steps]]]) -> list[tuple[str, int, str]]:
        """(reply, new tokens, finish reason) per job. Without steps: one free reply. With steps, part by part: the
        part's opening marker is written into the assistant turn (the prefill, kept in the reply) and generation
        stops at one of its closing markers or at the end of the turn, which closes the part as its first closing
        marker would (that marker is written after it); a part cut by the token limit ends the reply there.
        ``max_new_tokens`` limits each part."""
        # the cache key already hashes cfg.seed with the request: each request samples on its own
        seeds = [int(key[:15], 16) for key, _ in jobs]
        steps = [st or (("", ()),) for _, (_, st) in jobs]
        reply, used, finish = [""] * len(jobs), [0] * len(jobs), ["stop"] * len(jobs)
        active = list(range(len(jobs)))
        for part in range(max(len(st) for st in steps)):
            todo = [j for j in active if part < len(steps[j])]
            for stops in sorted({tuple(steps[j][part][1]) for j in todo}):
                group = [j for j in todo if tuple(steps[j][part][1]) == stops]
                for j in group:
                    prefill = steps[j][part][0]
                    done = prefill.strip() and reply[j].rstrip().endswith(prefill.strip())  # the model wrote it
                    reply[j] += " " if done else prefill
                out = self._generate_batch([self.prompt_ids(jobs[j][1][0], reply[j]) for j in group],
                                           [seeds[j] for j in group], stops)
                for j, g in zip(group, out, strict=True):
                    reply[j] += g.text
                    used[j] += g.n_tokens
                    finish[j] = g.finish_reason
                    if stops and g.finish_reason == "stop" and not any(reply[j].rstrip().endswith(s) for s in stops):
                        reply[j] = reply[j].rstrip() + " " + stops[0]  # the turn ended: so did the part
            active = [j for j in todo if finish[j] == "stop"]
        return list(zip(reply, used, finish, strict=True))


class VLLMTeacher(HFTeacher):
    """The same chat model, prompts, prefill steps and per-request seeds on a vLLM engine; the cache is keyed by
    backend, so its replies never stand in for the transformers teacher's."""

    batch_size = 512  # requests per vLLM call: each call's replies are cached before the next starts

    def _load(self) -> Any:
        if self._model is None:
            from selectune.core.vllm import load_engine

            cfg = self.cfg
            self._model = load_engine(cfg.model, cfg.dtype, cfg.vllm, cfg.seed, cfg.trust_remote_code)
        return self._model

    def _generate_batch(self, prompts: list[list[int]], seeds: list[int], stops: tuple[str, ...]) -> list[Any]:
        from selectune.core.vllm import generate_batch

        cfg = self.cfg
        return generate_batch(self._model, prompts, cfg.max_new_tokens, cfg.temperature, cfg.top_p, seeds, stops,
                              self.repetition_penalty)
