"""The LoRA adapters' dropout (a mask from 15 random bits per element) and the bf16 training path (the fused loss
under the Trainer's autocast, adapter inputs not copied to float32)."""

from __future__ import annotations

import types

import pandas as pd
import pytest
import torch

from selectune.core import lora

P = 0.05
DROPPED = round(P * 32768)  # 1638: p rounded to a multiple of 2^-15
SCALE = 32768 / (32768 - DROPPED)


def _dropout(p: float = P) -> torch.nn.Module:
    return lora._mask_dropout()(p).train()


def test_mask_dropout_keeps_the_rounded_fraction_and_scales_exactly() -> None:
    torch.manual_seed(0)
    x = torch.rand(1000, 2001) + 1.0  # odd element count: the last 32-bit draw is half used; no zeros in x
    out = _dropout()(x)
    kept = out != 0
    frac = kept.double().mean().item()
    sigma = (P * (1 - P) / x.numel()) ** 0.5
    assert abs(frac - (1 - DROPPED / 32768)) < 5 * sigma  # 0.950012 +- 0.0008
    assert torch.equal(out[kept], x[kept] * SCALE)  # kept values scaled once, dropped ones exactly 0
    assert abs(out.double().mean() / x.double().mean() - 1) < 5 * sigma  # expectation preserved
    both = (~kept[:, 0:2000:2] & ~kept[:, 1:2001:2]).double().mean().item()  # the two halves of one draw
    assert abs(both - (DROPPED / 32768) ** 2) < 5 * (P * P / x.numel() * 2) ** 0.5


def test_mask_dropout_gradient_is_the_mask_times_the_scale() -> None:
    torch.manual_seed(1)
    x = torch.randn(64, 640, dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn(64, 640, dtype=torch.bfloat16)
    out = _dropout()(x)
    out.backward(g)
    keep = out.detach() != 0
    assert out.dtype == torch.bfloat16 and keep.float().mean() < 1
    assert torch.equal(x.grad, g * keep * SCALE)


def test_mask_dropout_is_seeded_and_off_in_eval() -> None:
    x = torch.randn(32, 48) + 5.0
    drop = _dropout()
    torch.manual_seed(3)
    a = drop(x)
    torch.manual_seed(3)
    assert torch.equal(a, drop(x))  # reproducible from the global seed (checkpoints restore it)
    assert not torch.equal(a, drop(x))  # a fresh mask per call
    assert drop.eval()(x) is x
    tiny = _dropout(1e-6)  # rounds to 0: nn.Dropout's own draw
    assert isinstance(tiny, torch.nn.Dropout) and tiny(x).shape == x.shape


def test_add_lora_uses_the_mask_dropout(tiny_model: str) -> None:
    from transformers import AutoModelForCausalLM

    cfg = types.SimpleNamespace(lora_r=4, lora_alpha=8, lora_dropout=P, target_modules=None, seed=0)
    model, targets = lora.add_lora(AutoModelForCausalLM.from_pretrained(tiny_model), cfg)
    drops = [d for m in model.modules() for d in getattr(m, "lora_dropout", {}).values()]
    assert len(drops) >= len(targets) and all(type(d) is lora._mask_dropout() and d.p == P for d in drops)
    cfg.lora_dropout = 0.0
    model, _ = lora.add_lora(AutoModelForCausalLM.from_pretrained(tiny_model), cfg)
    drops = [d for m in model.modules() for d in getattr(m, "lora_dropout", {}).values()]
    assert drops and all(isinstance(d, torch.nn.Identity) for d in drops)


@pytest.mark.skipif(not torch.cpu._is_avx512_bf16_supported(), reason="no bf16 on this CPU")
def test_bf16_training_runs_the_adapters_under_autocast(tiny_model: str, tmp_path, monkeypatch) -> None:
    """Every adapter forward of a bf16 run (the fused loss, the first-batch check, evaluation) sees a bf16 input
    under autocast; afterwards peft casts adapter inputs again (inference without autocast needs it)."""
    from peft.tuners.lora import layer

    from selectune.data.records import record_id
    from selectune.tuning import train as sft
    from selectune.tuning.config import TuneConfig

    rows = [("Name a colour.", "", "Blue."), ("Add one and two.", "", "Three."), ("Say hi.", "", "Hi there!")] * 2
    df = pd.DataFrame(rows, columns=["instruction", "input", "output"])
    df.insert(0, "id", [record_id(*r) + str(i) for i, r in enumerate(rows)])
    df.to_parquet(tmp_path / "sel.parquet", index=False)
    seen: set[tuple[bool, torch.dtype, bool]] = set()
    forward = layer.Linear.forward

    def spy(self, x, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.add((torch.is_autocast_enabled("cpu"), x.dtype, self.cast_input_dtype_enabled))
        return forward(self, x, *args, **kwargs)

    monkeypatch.setattr(layer.Linear, "forward", spy)
    cfg = TuneConfig(base=tiny_model, dtype="bfloat16", max_steps=2, batch_size=2, grad_accum=1, max_tokens=256,
                     eval_fraction=0.34, eval_prompts=0, register_as=None, warmup_ratio=0.0, save_steps=10)
    result = sft.train(cfg, tmp_path / "sel.parquet", tmp_path / "out")
    assert seen == {(True, torch.bfloat16, False)}
    assert all(m.cast_input_dtype_enabled for m in result.model.modules() if isinstance(m, layer.LoraLayer))
