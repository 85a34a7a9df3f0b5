"""The local teacher backend: a transformers chat model with batched, length-sorted, left-padded generation.

Each request samples with its own torch.Generator (seeded from the request's cache key, which hashes
``cfg.seed``), so its text does not depend on its batch neighbours; see :mod:`selectune.teacher`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selectune.config import TeacherConfig
from selectune.teacher import Completion, Messages, Record, Teacher, teacher_id


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

            from selectune.models import resolve

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
            from selectune.models import load_causal_lm
            from selectune.settings import device, resolve_dtype

            dev = device()
            dtype = resolve_dtype(self.cfg.dtype, dev)
            attn = "eager" if dtype == "bfloat16" and dev == "cpu" else None
            self._model, self._tok = load_causal_lm(self.cfg.model, dtype, dev, self.cfg.trust_remote_code, attn)
        return self._model

    def _generate(self, todo: list[tuple[str, Messages]], record: Record, bar: Any) -> None:
        import torch
        from transformers import GenerationConfig

        from selectune.inference import length_batches, pad_left

        model = self._load()
        tok = self.tokenizer()
        ids = [self.prompt_ids(msgs) for _, msgs in todo]
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos if eos is not None else tok.eos_token_id])
        pad = tok.pad_token_id if tok.pad_token_id is not None else min(eos_ids)
        gen_cfg = GenerationConfig(max_new_tokens=self.cfg.max_new_tokens, do_sample=False,
                                   eos_token_id=sorted(eos_ids), pad_token_id=pad)
        dev = next(model.parameters()).device
        for batch in length_batches([len(x) for x in ids], self.cfg.batch_size, 1 << 62):
            rows = []
            for i in batch:
                reason = self._admit()
                if reason:
                    record(todo[i][0], Completion("", 0, 0, False, reason))
                else:
                    rows.append(i)
            if rows:
                input_ids, mask, _ = pad_left([ids[i] for i in rows], pad)
                procs = None
                if self.cfg.temperature > 0:
                    # the cache key already hashes cfg.seed with the request
                    gens = [torch.Generator().manual_seed(int(todo[i][0][:15], 16)) for i in rows]
                    procs = [RowSampler(gens, self.cfg.temperature, self.cfg.top_p)]
                with torch.inference_mode():
                    out = model.generate(input_ids=input_ids.to(dev), attention_mask=mask.to(dev),
                                         generation_config=gen_cfg, logits_processor=procs)
                for row, i in enumerate(rows):
                    new = out[row, input_ids.shape[1]:].tolist()
                    n = next((j + 1 for j, t in enumerate(new) if t in eos_ids), len(new))
                    text = tok.decode(new[:n], skip_special_tokens=True)
                    record(todo[i][0], Completion(text, len(ids[i]), n, False))
            bar.update(len(batch))


class RowSampler:
    """Logits processor that samples each row with its own generator (temperature, then top-p) and leaves
    only the drawn token, so greedy decoding emits it: a row's draws never depend on its batch neighbours."""

    def __init__(self, generators: list[Any], temperature: float, top_p: float) -> None:
        self.generators, self.temperature, self.top_p = generators, temperature, top_p

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        if self.top_p < 1:
            sorted_p, order = probs.sort(dim=-1, descending=True)
            drop = sorted_p.cumsum(-1) - sorted_p >= self.top_p  # keep the smallest prefix reaching top_p
            probs = probs.scatter(-1, order, sorted_p.masked_fill(drop, 0.0))
        out = torch.full_like(scores, float("-inf"))
        for row, gen in enumerate(self.generators):
            pick = torch.multinomial(probs[row].cpu(), 1, generator=gen).item()
            out[row, pick] = 0.0
        return out
