"""Token budgets of the batched engines."""

from __future__ import annotations

import pytest
from transformers import LlamaConfig

from selectune.core.losses import batch_budget, gpu_budget


def test_gpu_budget_is_a_quarter_of_free_memory_over_the_bytes_per_token() -> None:
    cfg = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8)  # Llama-3.1-8B: head dim 128
    per_token = 2 * (4 * 4096 + 3 * 14336 + 2 * 32 * 8 * 128)  # bfloat16: 249,856 bytes
    assert gpu_budget(120 * 2**30, cfg, 2) == int(120 * 2**30 / 4 / per_token) // 1024 * 1024 == 125 * 1024
    assert gpu_budget(8 * 2**30, cfg, 2) == 8192  # 8,595 tokens, rounded down
    assert gpu_budget(2**30, cfg, 2) == 4096  # at least the floor
    assert gpu_budget(2**40, cfg, 2) == 131072  # at most the ceiling


def test_batch_budget_on_cpu(tiny_model: str) -> None:
    from selectune.core.models import load_causal_lm

    model, _ = load_causal_lm(tiny_model, "float32", "cpu")
    assert batch_budget(model, None) == 1024 and batch_budget(model, None, 4096) == 4096
    assert batch_budget(model, 333) == 333


def _lora_and_batches(tiny_model: str) -> tuple:
    import torch
    from peft import LoraConfig, get_peft_model

    from selectune.core.models import load_causal_lm
    from selectune.tuning.data import Collator

    model, _ = load_causal_lm(tiny_model, "float32", "cpu")
    lora = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"],
                                            init_lora_weights=False))
    gen = torch.Generator().manual_seed(0)

    def example(n_prompt: int, n_response: int) -> dict:
        ids = torch.randint(3, 300, (n_prompt + n_response,), generator=gen).tolist()
        return {"input_ids": ids, "labels": [-100] * n_prompt + ids[n_prompt:]}

    plain = [example(5, 4), example(9, 7), example(3, 11)]
    packed = {"input_ids": plain[0]["input_ids"] + plain[1]["input_ids"],
              "labels": plain[0]["labels"] + plain[1]["labels"],
              "position_ids": list(range(9)) + list(range(16))}
    batches = {"plain": Collator(0, trim=False)(plain), "trimmed": Collator(0)(plain),
               "packed": Collator(0)([packed, {**example(4, 5), "position_ids": list(range(9))}])}
    assert "logits_to_keep" in batches["trimmed"]
    return lora, batches


@pytest.mark.parametrize("kind", ["plain", "trimmed", "packed"])
@pytest.mark.parametrize("softcap", [None, 2.0])
def test_fused_head_loss_equals_transformers_loss_and_gradients(tiny_model: str, kind: str, softcap) -> None:
    """causal_lm_loss (head on scored positions only, gradient computed in the forward pass) against the model's
    own loss: value and every LoRA gradient, mean and sum / num_items reductions, with a logit soft-cap too."""
    import torch

    from selectune.core.losses import causal_lm_loss, fused_head_supported

    lora, batches = _lora_and_batches(tiny_model)
    wrapped = torch.nn.Module()  # like DistributedDataParallel: the model is inside, its forward must run
    wrapped.module = lora
    assert not fused_head_supported(wrapped)
    lora.get_base_model().config.final_logit_softcapping = softcap  # Llama ignores it: applied by hand below
    batch = batches[kind]
    assert fused_head_supported(lora)
    params = [p for p in lora.parameters() if p.requires_grad]

    def reference(num_items) -> tuple:
        out = lora(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False)  # as in training
        logits = out.logits.float()
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        labels = torch.nn.functional.pad(batch["labels"], (0, 1), value=-100)[:, 1:]
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100,
                                                 reduction="sum" if num_items is not None else "mean")
        return loss / (num_items if num_items is not None else 1)

    for num_items in (None, torch.tensor(17)):
        want = reference(num_items)
        want_grads = torch.autograd.grad(want, params)
        got = causal_lm_loss(lora, batch, num_items, head_rows=3)  # several chunks, the last one short
        got_grads = torch.autograd.grad(got, params)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        for g, w in zip(got_grads, want_grads, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)
    if softcap is None and kind == "plain":  # and the model's own loss, as the Trainer computes it
        torch.testing.assert_close(causal_lm_loss(lora, batch), lora(**batch, use_cache=False).loss, rtol=1e-5,
                                   atol=1e-6)
