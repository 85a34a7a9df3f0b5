"""The local teacher backend: a transformers chat model with batched, length-sorted, left-padded generation.

Each request samples with its own torch.Generator (seeded from the request's cache key, which hashes
``cfg.seed``), so its text does not depend on its batch neighbours; see :mod:`selectune.core.generate`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selectune.reflection.config import TeacherConfig
from selectune.reflection.teachers.base import Completion, Messages, Record, Teacher, teacher_id


class HFTeacher(Teacher):
    """A local transformers chat model; batched, left-padded, length-sorted generation."""

    def __init__(self, cfg: TeacherConfig, cache_path: Path | None) -> None:
        self.id = teacher_id(cfg)
        super().__init__(cfg, cache_path)
        self._model: Any = None
        self._tok: Any = None

    def tokenizer(self) -> Any:
        if self._tok is None:
            from transformers import AutoTokenizer

            from selectune.core.models import resolve

            self._tok = AutoTokenizer.from_pretrained(resolve(self.cfg.model),
                                                      trust_remote_code=self.cfg.trust_remote_code)
        return self._tok

    def prompt_ids(self, messages: Messages) -> list[int]:
        """Token ids of the chat-templated prompt, ending with the assistant cue."""
        tok = self.tokenizer()
        if not getattr(tok, "chat_template", None):
            raise ValueError(f"teacher model {self.cfg.model!r} has no chat template; use an instruct model")
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tok(text, add_special_tokens=False)["input_ids"]

    def _load(self) -> Any:
        if self._model is None:
            from selectune.core.models import load_causal_lm
            from selectune.core.settings import device, resolve_dtype

            dev = device()
            self._model, self._tok = load_causal_lm(self.cfg.model, resolve_dtype(self.cfg.dtype, dev), dev,
                                                    self.cfg.trust_remote_code, "auto")
        return self._model

    def _generate(self, todo: list[tuple[str, Messages]], record: Record, bar: Any) -> None:
        from selectune.core.generate import generate_batch
        from selectune.core.lm import length_batches

        model = self._load()
        tok = self.tokenizer()
        ids = [self.prompt_ids(msgs) for _, msgs in todo]
        for batch in length_batches([len(x) for x in ids], self.cfg.batch_size, 1 << 62):
            rows = []
            for i in batch:
                reason = self._admit()
                if reason:
                    record(todo[i][0], Completion("", 0, 0, False, reason))
                else:
                    rows.append(i)
            if rows:
                # the cache key already hashes cfg.seed with the request: each request samples on its own
                seeds = [int(todo[i][0][:15], 16) for i in rows]
                out = generate_batch(model, tok, [ids[i] for i in rows], self.cfg.max_new_tokens,
                                     self.cfg.temperature, self.cfg.top_p, seeds)
                for i, g in zip(rows, out, strict=True):
                    record(todo[i][0], Completion(g.text, len(ids[i]), g.n_tokens, False))
            bar.update(len(batch))
