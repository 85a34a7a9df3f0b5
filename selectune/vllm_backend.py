"""vLLM backend (optional extra ``.[vllm]``, Linux + CUDA only): the transformers paths' numbers at GPU-server
throughput -- SelectIT rating probabilities, IFD target losses, teacher generation and response sampling.

Prompts are tokenized by our own code (``scoring.build_texts`` + ``inference.encode``, ``ifd.pack``) and sent as
token ids, so both backends see exactly the same tokens, truncation included.

SelectIT probabilities: one decoding step per rating text with ``SamplingParams(max_tokens=1, logprobs=top_n,
temperature=0)``. vLLM returns the top-n log-probabilities of the *raw* next-token distribution (its default
``logprobs_mode="raw_logprobs"``: full-vocabulary log-softmax before temperature or penalties), so
``exp(logprob)`` of each rating token "1".."K" is the transformers path's softmax probability. A rating token
outside the top n is not approximated: it is queried exactly by appending it to the prompt and reading its
``prompt_logprobs`` entry (counted as ``fallback_queries`` in the engine settings). Agreement with transformers:
within 2e-2 absolute in bfloat16 (different kernels and reduction orders), see tests/test_vllm.py.

IFD: ``prompt_logprobs=1`` on the packed sequence returns, at each position, the log-probability of the actual
prompt token; the mean negative log-probability over the last ``n_target`` tokens is the target loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from selectune.config import SelectITConfig, TeacherConfig

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
    from selectune import models
    from selectune.settings import resolve_dtype

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


def rating_probs(engine: Engine, seqs: Sequence[Sequence[int]], token_ids: Sequence[int],
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


def rate(df: pd.DataFrame, model_name: str, cfg: SelectITConfig, prompts: list[str], engine: Engine,
         progress: bool = True) -> Any:
    """``scoring.rate`` on vLLM (no rating cache: its keys name the transformers dtype); a RaterResult."""
    import time

    from selectune import inference, models
    from selectune.scoring import RaterResult, build_texts

    tok = engine.tokenizer()
    texts, tail = build_texts(df, prompts, cfg.layout, tok)
    enc = inference.encode(tok, texts, tail, cfg.max_tokens, cfg.truncation,
                           add_special_tokens=cfg.layout == "official")
    start = time.perf_counter()
    probs = rating_probs(engine, [e.ids for e in enc], inference.rating_token_ids(tok, cfg.rating_scale), progress)
    n, r = len(df), len(prompts)
    return RaterResult(models.model_key(model_name), probs.reshape(n, r, cfg.rating_scale),
                       np.array([e.truncated for e in enc]).reshape(n, r), models.count_parameters(model_name),
                       computed=n * r, tokens=sum(len(e.ids) for e in enc), seconds=time.perf_counter() - start,
                       fingerprint=models.fingerprint(model_name))


def score_selectit(df: pd.DataFrame, cfg: SelectITConfig, progress: bool = True,
                   **engine_kwargs: Any) -> tuple[Any, list[dict[str, Any]]]:
    """``scoring.score_selectit`` on vLLM: (ScoreReport, engine settings per rater). Raters load one at a time."""
    import gc

    from selectune.scoring import combine, rating_prompts

    prompts = rating_prompts(cfg)
    raters, settings = [], []
    for m in cfg.models:
        engine = load_engine(m, cfg.dtype, trust_remote_code=cfg.trust_remote_code, **engine_kwargs)
        raters.append(rate(df, m, cfg, prompts, engine, progress))
        settings.append(engine.settings)
        del engine
        gc.collect()
    return combine(df, raters, cfg), settings


def target_losses(engine: Engine, seqs: Sequence[Sequence[int]], n_targets: Sequence[int],
                  progress: bool = True) -> np.ndarray:
    """``ifd.target_losses`` on vLLM: mean negative log-probability of the last ``n_targets[i]`` tokens."""
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
    """``ifd.sequence_losses`` on vLLM: (losses, target tokens scored, truncated), same packing."""
    from selectune import ifd

    tok = engine.tokenizer()
    start = ifd.start_ids(tok)
    ids = tok(prefixes + targets, add_special_tokens=False)["input_ids"] if prefixes else []
    packed = [ifd.pack(start, list(p), list(t), max_length)
              for p, t in zip(ids[: len(prefixes)], ids[len(prefixes):], strict=True)]
    seqs = [p[0] for p in packed]
    n_t = np.array([p[1] for p in packed], dtype=int)
    return target_losses(engine, seqs, n_t, progress), n_t, np.array([p[2] for p in packed], dtype=bool)


def generate(engine: Engine, requests: Sequence[list[dict[str, str]]], cfg: TeacherConfig, n: int = 1,
             progress: bool = True) -> list[list[Any]]:
    """Teacher replies (``n`` samples per chat request; temperature 0 = greedy): ``[request][sample]`` of
    ``teacher.Completion``. Each request's sampling is seeded by ``cfg.seed``, so reruns repeat."""
    from vllm import SamplingParams

    from selectune.teacher import Completion

    tok = engine.tokenizer()
    if not getattr(tok, "chat_template", None):
        raise ValueError(f"teacher model {engine.settings.get('model')!r} has no chat template; use an instruct model")
    ids = [tok(tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True),
               add_special_tokens=False)["input_ids"] for m in requests]
    params = SamplingParams(n=n, temperature=cfg.temperature, top_p=cfg.top_p if cfg.temperature > 0 else 1.0,
                            max_tokens=cfg.max_new_tokens, seed=cfg.seed)
    outs = engine.llm.generate(_prompts(ids), params, use_tqdm=progress)
    return [[Completion(c.text, len(p), len(c.token_ids), False) for c in out.outputs]
            for p, out in zip(ids, outs, strict=True)]
