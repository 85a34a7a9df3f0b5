"""vLLM backend. The GPU tests need CUDA and `pip install 'selectune[vllm]'` and skip cleanly without them;
they compare vLLM with the transformers paths on the embedded gemma-3-270m in bfloat16.

Tolerances (bfloat16, different kernels and reduction orders): rating probabilities within 2e-2 absolute,
IFD target losses within 5e-2 absolute (mean token NLL, nats).
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest

from selectune.core import vllm as vllm_backend
from tests.fixtures import DEMO

HAS_VLLM = importlib.util.find_spec("vllm") is not None


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_clear_error_without_vllm_or_cuda() -> None:
    if HAS_VLLM and _cuda():
        pytest.skip("vLLM and a GPU are both present: the error path cannot be reached")
    with pytest.raises(RuntimeError, match=r"pip install 'selectune\[vllm\]'" if not HAS_VLLM else "CUDA GPU"):
        vllm_backend.load_engine("gemma-3-270m")


gpu = pytest.mark.skipif(not (HAS_VLLM and _cuda()), reason="needs vllm and a CUDA GPU")


@pytest.fixture(scope="module")
def demo() -> pd.DataFrame:
    from selectune.data.records import load_records

    path = DEMO
    return load_records(path).records.head(8).reset_index(drop=True)


@pytest.fixture(scope="module")
def engine():
    eng = vllm_backend.load_engine("gemma-3-270m", dtype="bfloat16", max_num_seqs=64, gpu_memory_utilization=0.3)
    yield eng
    del eng


@pytest.mark.gpu
@gpu
def test_selectit_probabilities_match_transformers(engine, demo) -> None:
    from selectune.config import SelectITConfig
    from selectune.selectit.rater import rate, rate_vllm, rating_prompts

    cfg = SelectITConfig(models=["gemma-3-270m"], dtype="bfloat16", use_cache=False)
    prompts = rating_prompts(cfg)
    ref = rate(demo, "gemma-3-270m", cfg, prompts, cache=None, progress=False)
    got = rate_vllm(demo, "gemma-3-270m", cfg, prompts, engine, progress=False)
    assert got.probs.shape == ref.probs.shape == (8, len(prompts), 5)
    np.testing.assert_allclose(got.probs, ref.probs, atol=2e-2, rtol=0)
    assert (got.truncated == ref.truncated).all()
    settings = engine.settings
    assert settings["backend"] == "vllm" and settings["dtype"] == "bfloat16" and settings["max_num_seqs"] == 64
    json.dumps(settings)  # recorded next to the scores: must serialize


@pytest.mark.gpu
@gpu
def test_ifd_losses_match_transformers(engine, demo) -> None:
    from selectune.config import IFDConfig
    from selectune.core import losses
    from selectune.core.prompts import prompt_text
    from selectune.reflection import ifd

    cfg = IFDConfig(model="gemma-3-270m", dtype="bfloat16")
    model, tok = ifd.load_student(cfg)
    prefixes = [prompt_text("alpaca", None, i, x) for i, x in zip(demo["instruction"], demo["input"], strict=True)]
    targets = demo["output"].tolist()
    ref, n_ref, _ = losses.sequence_losses(model, tok, prefixes + [""] * 8, targets * 2, cfg.max_tokens)
    got, n_got, _ = vllm_backend.sequence_losses(engine, prefixes + [""] * 8, targets * 2, cfg.max_tokens)
    assert (n_got == n_ref).all()
    np.testing.assert_allclose(got, ref, atol=5e-2, rtol=0)


@pytest.mark.gpu
@gpu
def test_generation_greedy_is_reproducible(engine) -> None:
    engine.llm.get_tokenizer().chat_template = engine.llm.get_tokenizer().chat_template or (
        "{% for m in messages %}{{ m['content'] }}\n{% endfor %}")
    reqs = [[{"role": "user", "content": "Name a colour."}], [{"role": "user", "content": "Count to three."}]]
    a = vllm_backend.generate(engine, reqs, 16, temperature=0.0, progress=False)
    b = vllm_backend.generate(engine, reqs, 16, temperature=0.0, progress=False)
    assert [[c.text for c in r] for r in a] == [[c.text for c in r] for r in b]
    assert all(0 < c.completion_tokens <= 16 and c.prompt_tokens > 0 for r in a for c in r)
    samples = vllm_backend.generate(engine, reqs[:1], 16, temperature=1.0, n=3, progress=False)
    assert len(samples[0]) == 3
