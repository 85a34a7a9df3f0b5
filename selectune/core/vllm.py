"""vLLM engine (optional extra ``.[vllm]``, Linux + CUDA only): the transformers engines' numbers at GPU-server
throughput -- last-token probabilities (SelectIT ratings), target losses (IFD), chat generation (teachers).

Prompts are tokenized by our own code (``selectit.scoring.build_texts`` + ``lm.encode``, ``losses.pack``) and sent
as token ids, so both engines see exactly the same tokens, truncation included.

SelectIT probabilities: one decoding step per rating text with ``SamplingParams(max_tokens=1, logprobs=top_n,
temperature=0)``. vLLM returns the top-n log-probabilities of the *raw* next-token distribution (its default
``logprobs_mode="raw_logprobs"``: full-vocabulary log-softmax before temperature or penalties), so
``exp(logprob)`` of each rating token "1".."K" is the transformers path's softmax probability. A rating token
outside the top n is not approximated: it is queried exactly by appending it to the prompt and reading its
``prompt_logprobs`` entry (counted as ``fallback_queries`` in the engine settings). Agreement with transformers:
within 2e-2 absolute in bfloat16 (different kernels and reduction orders), see tests/unit/core/test_vllm.py.

IFD: ``prompt_logprobs=1`` on the packed sequence returns, at each position, the log-probability of the actual
prompt token; the mean negative log-probability over the last ``n_target`` tokens is the target loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

TOP_N = 20  # vLLM's default max_logprobs


@dataclass
class Engine:
    """A loaded vLLM engine and the settings recorded with everything it scores."""

    llm: Any
    settings: dict[str, Any] = field(default_factory=dict)

    def tokenizer(self) -> Any:
        return self.llm.get_tokenizer()


def require_vllm() -> Any:
    """The vllm module, or a clear error when it is not installed or no CUDA GPU is visible."""
    try:
        import vllm
    except ImportError as err:
        raise RuntimeError("the vLLM backend needs the optional extra: pip install 'selectune[vllm]' "
                           "(Linux with a CUDA GPU); use the transformers backend elsewhere") from err
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("the vLLM backend needs a CUDA GPU, and torch sees none (torch.cuda.is_available() "
                           "is False); use the transformers backend on this machine")
    return vllm


def load_engine(model: str, dtype: str = "auto", max_num_seqs: int = 256, max_model_len: int | None = None,
                gpu_memory_utilization: float = 0.9, seed: int = 0, trust_remote_code: bool = False,
                top_n: int = TOP_N, **engine_kwargs: Any) -> Engine:
    """vllm.LLM for an alias, local folder or hub id (safetensors); ``dtype`` auto = bfloat16 where supported."""
    vllm = require_vllm()
    from selectune.core import models
    from selectune.core.settings import resolve_dtype

    dt = resolve_dtype(dtype, "cuda")
    llm = vllm.LLM(model=str(models.resolve(model)), dtype=dt, max_num_seqs=max_num_seqs, max_model_len=max_model_len,
                   gpu_memory_utilization=gpu_memory_utilization, seed=seed, trust_remote_code=trust_remote_code,
                   max_logprobs=top_n, load_format="safetensors", **engine_kwargs)
    settings = {"backend": "vllm", "vllm_version": vllm.__version__, "model": model, "dtype": dt,
                "max_num_seqs": max_num_seqs, "max_model_len": llm.llm_engine.model_config.max_model_len,
                "gpu_memory_utilization": gpu_memory_utilization, "top_n": top_n, "seed": seed,
                "fallback_queries": 0, **{k: str(v) for k, v in engine_kwargs.items()}}
    return Engine(llm, settings)


def _prompts(seqs: Sequence[Sequence[int]]) -> list[dict[str, list[int]]]:
    return [{"prompt_token_ids": list(s)} for s in seqs]


def last_token_probs(engine: Engine, seqs: Sequence[Sequence[int]], token_ids: Sequence[int],
                     progress: bool = True) -> np.ndarray:
    """Next-token probabilities ``[N, K]`` of ``token_ids`` after each token sequence (see module docstring)."""
    from vllm import SamplingParams

    top_n = engine.settings.get("top_n", TOP_N)
    outs = engine.llm.generate(_prompts(seqs), SamplingParams(max_tokens=1, temperature=0.0, logprobs=top_n),
                               use_tqdm=progress)
    probs = np.full((len(seqs), len(token_ids)), np.nan)
    for i, out in enumerate(outs):
        top = out.outputs[0].logprobs[0]
        for j, tid in enumerate(token_ids):
            if tid in top:
                probs[i, j] = np.exp(top[tid].logprob)
    missing = np.argwhere(np.isnan(probs))
    if len(missing):  # exact query: the rating token appended, its prompt log-probability read back
        extra = [list(seqs[i]) + [token_ids[j]] for i, j in missing]
        outs = engine.llm.generate(_prompts(extra), SamplingParams(max_tokens=1, prompt_logprobs=1),
                                   use_tqdm=progress)
        for (i, j), out in zip(missing, outs, strict=True):
            probs[i, j] = np.exp(out.prompt_logprobs[-1][token_ids[j]].logprob)
        engine.settings["fallback_queries"] += len(missing)
    return probs


def target_losses(engine: Engine, seqs: Sequence[Sequence[int]], n_targets: Sequence[int],
                  progress: bool = True) -> np.ndarray:
    """``losses.target_losses`` on vLLM: mean negative log-probability of the last ``n_targets[i]`` tokens."""
    from vllm import SamplingParams

    outs = engine.llm.generate(_prompts(seqs), SamplingParams(max_tokens=1, prompt_logprobs=1), use_tqdm=progress)
    losses = np.zeros(len(seqs))
    for i, (seq, n, out) in enumerate(zip(seqs, n_targets, outs, strict=True)):
        if n < 1 or n >= len(seq):
            raise ValueError(f"sequence {i}: {n} target tokens of {len(seq)} (need 1 <= n < length)")
        lp = [out.prompt_logprobs[p][seq[p]].logprob for p in range(len(seq) - n, len(seq))]
        losses[i] = -float(np.mean(lp))
    return losses


def sequence_losses(engine: Engine, prefixes: list[str], targets: list[str], max_length: int,
                    progress: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``losses.sequence_losses`` on vLLM: (losses, target tokens scored, truncated), same packing."""
    from selectune.core.losses import pack, start_ids

    tok = engine.tokenizer()
    start = start_ids(tok)
    ids = tok(prefixes + targets, add_special_tokens=False)["input_ids"] if prefixes else []
    packed = [pack(start, list(p), list(t), max_length)
              for p, t in zip(ids[: len(prefixes)], ids[len(prefixes):], strict=True)]
    seqs = [p[0] for p in packed]
    n_t = np.array([p[1] for p in packed], dtype=int)
    return target_losses(engine, seqs, n_t, progress), n_t, np.array([p[2] for p in packed], dtype=bool)


@dataclass(frozen=True)
class Reply:
    text: str
    prompt_tokens: int
    completion_tokens: int


def generate(engine: Engine, requests: Sequence[list[dict[str, str]]], max_new_tokens: int, temperature: float = 0.0,
             top_p: float = 1.0, seed: int = 0, n: int = 1, progress: bool = True) -> list[list[Reply]]:
    """Replies to chat requests (``n`` samples each; temperature 0 = greedy): ``[request][sample]``. Each request's
    sampling is seeded by ``seed``, so reruns repeat."""
    from vllm import SamplingParams

    tok = engine.tokenizer()
    if not getattr(tok, "chat_template", None):
        raise ValueError(f"model {engine.settings.get('model')!r} has no chat template; use an instruct model")
    ids = [tok(tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True),
               add_special_tokens=False)["input_ids"] for m in requests]
    params = SamplingParams(n=n, temperature=temperature, top_p=top_p if temperature > 0 else 1.0,
                            max_tokens=max_new_tokens, seed=seed)
    outs = engine.llm.generate(_prompts(ids), params, use_tqdm=progress)
    return [[Reply(c.text, len(p), len(c.token_ids)) for c in out.outputs] for p, out in zip(ids, outs, strict=True)]
