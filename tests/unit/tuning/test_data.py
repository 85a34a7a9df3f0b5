"""Tuning examples: the prompt masked exactly, the template rule, packing without cross-attention, trimmed logits."""

from __future__ import annotations

import pytest
import torch

from selectune.core import prompts
from selectune.tuning import data as sft_data


def _tok(path: str):  # noqa: ANN202
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def test_labels_mask_exactly_the_prompt(tiny_model: str) -> None:
    tok = _tok(tiny_model)
    ex = sft_data.encode(tok, "alpaca", "Add two and three.", "", "2 + 3 = 5", 512)
    prompt = prompts.ALPACA.format(instruction="Add two and three.")
    assert ex.n_prompt == len(tok(prompt)["input_ids"])
    assert ex.labels[:ex.n_prompt] == [-100] * ex.n_prompt
    assert ex.labels[ex.n_prompt:] == ex.input_ids[ex.n_prompt:]
    assert tok.decode(ex.input_ids[:ex.n_prompt]) == prompt
    assert tok.decode(ex.input_ids[ex.n_prompt:]) == "2 + 3 = 5</s>"

    ex = sft_data.encode(tok, "chat", "Translate to French", "good morning", "bonjour", 512)
    prompt = "<|user|>\nTranslate to French\ngood morning<|end|>\n<|assistant|>\n"  # the one joiner: "\n"
    assert tok.decode(ex.input_ids[:ex.n_prompt]) == prompt
    assert tok.decode(ex.input_ids[ex.n_prompt:]) == "bonjour<|end|>\n</s>"  # template's turn end, then EOS
    assert ex.labels == [-100] * ex.n_prompt + ex.input_ids[ex.n_prompt:]

    cut = sft_data.encode(tok, "alpaca", "Add two and three.", "", "2 + 3 = 5", ex.n_prompt + 2)
    assert cut.truncated and len(cut.input_ids) == len(cut.labels) == ex.n_prompt + 2


def test_template_rule(tiny_model: str) -> None:
    tok = _tok(tiny_model)
    assert prompts.pick_template("auto", tiny_model, tok) == "alpaca"  # has a chat template, but not an instruct name
    assert prompts.pick_template("auto", "/models/SmolLM2-135M-Instruct", tok) == "chat"
    assert prompts.pick_template("auto", "smollm2-135m-instruct", tok) == "chat"
    assert prompts.pick_template("auto", "gemma-3-270m", tok) == "alpaca"
    tok.chat_template = None
    assert prompts.pick_template("auto", "org/some-chat-model", tok) == "alpaca"
    with pytest.raises(ValueError, match="no chat template"):
        prompts.pick_template("chat", "x", tok)


def test_packing_blocks_and_isolation(tiny_model: str) -> None:
    from selectune.core.models import load_causal_lm

    exs = [sft_data.Example(list(range(10, 10 + n)), [-100] * 2 + list(range(12, 10 + n)), 2) for n in (5, 7, 4, 9)]
    blocks = sft_data.pack(exs, 16)
    assert [len(b.input_ids) for b in blocks] == [16, 9]  # 5+7+4 | 9 (9 more would exceed 16)
    assert blocks[0].position_ids == list(range(5)) + list(range(7)) + list(range(4))
    assert blocks[0].labels == exs[0].labels + exs[1].labels + exs[2].labels
    batch = sft_data.Collator(pad_id=0, trim=False)([b.features() for b in blocks])
    assert "attention_mask" not in batch and batch["input_ids"].shape == (2, 16)
    assert batch["position_ids"][1].tolist() == list(range(9)) + list(range(7))  # padding: its own sequence
    assert batch["labels"][1].tolist()[9:] == [-100] * 7 and batch["input_ids"][1].tolist()[9:] == [0] * 7

    model, _ = load_causal_lm(tiny_model)
    model.config.use_cache = False
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        for start, ex in ((0, exs[0]), (5, exs[1]), (12, exs[2])):  # each packed example sees only itself
            alone = model(input_ids=torch.tensor([ex.input_ids])).logits[0]
            torch.testing.assert_close(packed[0, start:start + len(ex.input_ids)], alone, atol=1e-4, rtol=1e-4)


def test_trimmed_logits_give_the_same_loss(tiny_model: str) -> None:
    from selectune.core.models import load_causal_lm

    model, tok = load_causal_lm(tiny_model)
    exs = [sft_data.encode(tok, "alpaca", "Add two and three.", "", "2 + 3 = 5", 512),
           sft_data.encode(tok, "alpaca", "Translate to French", "good morning", "bonjour", 512)]
    full = sft_data.Collator(tok.pad_token_id, trim=False)([e.features() for e in exs])
    trimmed = sft_data.Collator(tok.pad_token_id)([e.features() for e in exs])
    start = min(e.n_prompt for e in exs) - 1
    assert trimmed["logits_to_keep"] == full["input_ids"].shape[1] - start
    assert torch.equal(trimmed["labels"], full["labels"][:, start:])
    with torch.no_grad():
        torch.testing.assert_close(model(**trimmed).loss, model(**full).loss)
