"""Token budgets of the batched engines."""

from __future__ import annotations

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
