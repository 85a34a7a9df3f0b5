"""vLLM engine (``backend: vllm``; the optional extra ``.[vllm]``, Linux + CUDA only): the transformers engines'
numbers at GPU-server throughput -- last-token probabilities (SelectIT ratings), target losses (IFD), generation
(teachers, the judge's samples).

Prompts are tokenized by our own code (``selectit.rater.build_texts`` + ``lm.encode``, ``losses.pack``) and sent as
token ids, so both engines see exactly the same tokens, truncation included. Requests are plain dicts (built
here, pure) and results are read by pure parsers from vLLM's documented output structure: a ``RequestOutput`` has
``prompt_logprobs`` (one ``{token id: Logprob}`` per prompt position, ``None`` at the first) and ``outputs``, a
list of ``CompletionOutput`` (``text``, ``token_ids``, ``finish_reason``, ``logprobs``: one ``{token id: Logprob}``
per generated token). Only :meth:`Engine.run` touches vLLM itself.

SelectIT probabilities: one decoding step per rating text with ``max_tokens=1, logprobs=top_n, temperature=0``.
vLLM returns the top-n log-probabilities of the *raw* next-token distribution (its default
``logprobs_mode="raw_logprobs"``: full-vocabulary log-softmax before temperature or penalties), so ``exp(logprob)``
of each rating token "1".."K" is the transformers path's softmax probability. A rating token outside the top n is
not approximated: it is queried exactly by appending it to the prompt and reading its ``prompt_logprobs`` entry
(counted as ``fallback_queries`` in the engine settings); a result without it is an error naming the text.

IFD: ``prompt_logprobs=1`` on the packed sequence returns, at each position, the log-probability of the actual
prompt token; the mean negative log-probability over the last ``n_target`` tokens is the target loss.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from selectune.core.generate import Generated

TOP_N = 20  # vLLM's default max_logprobs
INSTALL = ("pip install 'selectune[vllm]' on Linux with a CUDA GPU (the extra pins vllm 0.32.0, built on this torch; "
           "see docs/capacity.md, 'vLLM', for its dependency caps), or set vllm.base_url to a running vLLM server")


def unavailable() -> str | None:
    """Why the vLLM backend cannot run here (None: it can): vLLM not installed, or no CUDA GPU visible."""
    if importlib.util.find_spec("vllm") is None:
        return f"vLLM is not installed: {INSTALL}"
    import torch

    if not torch.cuda.is_available():
        return "vLLM needs a CUDA GPU and torch sees none (torch.cuda.is_available() is False); use backend: hf here"
    return None


@dataclass
class Engine:
    """A loaded vLLM engine and the settings recorded with everything it scores."""

    llm: Any
    settings: dict[str, Any] = field(default_factory=dict)
    lora: Any = None  # a vllm LoRARequest applied to every request (an adapter under evaluation)

    def tokenizer(self) -> Any:
        return self.llm.get_tokenizer()

    def run(self, seqs: Sequence[Sequence[int]], params: Mapping[str, Any] | Sequence[Mapping[str, Any]],
            progress: bool = True) -> list[Any]:
        """``llm.generate`` on token-id prompts; ``params``: SamplingParams fields, one mapping for all or one per
        prompt."""
        from vllm import SamplingParams

        sp = SamplingParams(**params) if isinstance(params, Mapping) else [SamplingParams(**p) for p in params]
        return self.llm.generate([{"prompt_token_ids": list(s)} for s in seqs], sp, use_tqdm=progress,
                                 lora_request=self.lora)


def load_engine(model: str, dtype: str = "auto", options: Any = None, seed: int = 0, trust_remote_code: bool = False,
                adapter: str | None = None, **engine_kwargs: Any) -> Engine:
    """vllm.LLM for an alias, local folder or hub id (safetensors); ``dtype`` auto = bfloat16 where supported;
    ``options``: a :class:`selectune.core.config.VLLMOptions` (default its defaults); ``adapter``: a LoRA adapter
    folder served on top of ``model``. With a server for ``model`` in ``options.base_url`` the engine is that server
    (:func:`selectune.core.vllm_server.connect`; ``dtype`` is then the server's)."""
    from selectune.core.config import VLLMOptions

    o = options or VLLMOptions()
    if url := o.server_for(model):
        from selectune.core.vllm_server import connect

        return connect(model, url, o, seed, trust_remote_code, adapter)
    if why := unavailable():
        raise RuntimeError(f"the vLLM backend cannot run here: {why}")
    import vllm

    from selectune.core import models
    from selectune.core.settings import resolve_dtype

    top_n = o.top_logprobs
    max_num_seqs, gpu_memory_utilization, tensor_parallel_size = (o.max_num_seqs, o.gpu_memory_utilization,
                                                                  o.tensor_parallel_size)
    dt = resolve_dtype(dtype, "cuda")
    lora_kwargs: dict[str, Any] = {}
    if adapter:
        from peft import PeftConfig

        lora_kwargs = {"enable_lora": True, "max_lora_rank": max(16, PeftConfig.from_pretrained(adapter).r)}
    llm = vllm.LLM(model=str(models.resolve(model)), dtype=dt, max_num_seqs=max_num_seqs, seed=seed,
                   gpu_memory_utilization=gpu_memory_utilization, tensor_parallel_size=tensor_parallel_size,
                   trust_remote_code=trust_remote_code, max_logprobs=top_n, load_format="safetensors",
                   **lora_kwargs, **engine_kwargs)
    settings = {"backend": "vllm", "vllm_version": vllm.__version__, "model": model, "dtype": dt,
                "max_num_seqs": max_num_seqs, "max_model_len": llm.llm_engine.model_config.max_model_len,
                "gpu_memory_utilization": gpu_memory_utilization, "tensor_parallel_size": tensor_parallel_size,
                "top_n": top_n, "seed": seed, "fallback_queries": 0, "adapter": adapter,
                **{k: str(v) for k, v in engine_kwargs.items()}}
    lora = None
    if adapter:
        from vllm.lora.request import LoRARequest

        lora = LoRARequest("adapter", 1, str(adapter))
    return Engine(llm, settings, lora)


# ---- requests (pure) ----

def rating_params(top_n: int = TOP_N) -> dict[str, Any]:
    """One greedy step whose top-``top_n`` raw log-probabilities are returned."""
    return {"max_tokens": 1, "temperature": 0.0, "logprobs": top_n}


PROMPT_LOGPROB_PARAMS: dict[str, Any] = {"max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 1}


def generation_params(max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
                      stop_strings: Sequence[str] = (), repetition_penalty: float = 1.0) -> dict[str, Any]:
    """One reply, greedy at temperature 0, else sampled with its own ``seed``; it ends at an end-of-sequence token,
    after ``max_new_tokens``, or after one of ``stop_strings`` (kept in its text, as the transformers engine does).
    vLLM's ``repetition_penalty`` counts the prompt's tokens too (the transformers engine's only the reply's)."""
    out: dict[str, Any] = {"n": 1, "temperature": temperature, "top_p": top_p if temperature > 0 else 1.0,
                           "max_tokens": max_new_tokens, "repetition_penalty": repetition_penalty,
                           "skip_special_tokens": True}
    if temperature > 0:
        out["seed"] = seed
    if stop_strings:
        out.update(stop=list(stop_strings), include_stop_str_in_output=True)
    return out


# ---- results (pure) ----

def _logprob(entry: Mapping[int, Any] | None, token: int) -> float | None:
    if entry is None or token not in entry:
        return None
    return float(entry[token].logprob)


def top_probs(outputs: Sequence[Any], token_ids: Sequence[int]) -> np.ndarray:
    """``[N, K]`` probabilities of ``token_ids`` from each result's first generated step (NaN where a token is not
    among the returned top-n)."""
    probs = np.full((len(outputs), len(token_ids)), np.nan)
    for i, out in enumerate(outputs):
        steps = out.outputs[0].logprobs if out.outputs else None
        if not steps:
            raise ValueError(f"vLLM result {i}: no logprobs returned for the first generated token (the request asks "
                             "for them: is the engine's max_logprobs below top_n?)")
        for j, tid in enumerate(token_ids):
            if (lp := _logprob(steps[0], tid)) is not None:
                probs[i, j] = np.exp(lp)
    return probs


def appended_probs(outputs: Sequence[Any], tokens: Sequence[int]) -> np.ndarray:
    """Probability of each prompt's last token (the appended rating token ``tokens[i]``) from ``prompt_logprobs``."""
    out = np.zeros(len(outputs))
    for i, (res, tid) in enumerate(zip(outputs, tokens, strict=True)):
        lp = _logprob(res.prompt_logprobs[-1] if res.prompt_logprobs else None, tid)
        if lp is None:
            raise ValueError(f"vLLM result {i}: the prompt log-probability of rating token {tid} is missing from "
                             "prompt_logprobs (a vLLM result always holds the actual prompt token's entry)")
        out[i] = np.exp(lp)
    return out


def target_loss(res: Any, seq: Sequence[int], n_target: int, index: int = 0) -> float:
    """Mean negative log-probability of the last ``n_target`` tokens of ``seq`` from its ``prompt_logprobs``."""
    if n_target < 1 or n_target >= len(seq):
        raise ValueError(f"sequence {index}: {n_target} target tokens of {len(seq)} (need 1 <= n < length)")
    lps = res.prompt_logprobs
    if lps is None or len(lps) != len(seq):
        raise ValueError(f"vLLM result {index}: {0 if lps is None else len(lps)} prompt log-probabilities for a "
                         f"{len(seq)}-token prompt")
    total = 0.0
    for p in range(len(seq) - n_target, len(seq)):
        lp = _logprob(lps[p], seq[p])
        if lp is None:
            raise ValueError(f"vLLM result {index}: no log-probability for prompt token {seq[p]} at position {p}")
        total += lp
    return -total / n_target


def generated(outputs: Sequence[Any]) -> list[Generated]:
    """The first reply of each result as the transformers engine reports it: text, new tokens, "stop" (an
    end-of-sequence token or a stop string) or "length" (``max_tokens`` hit)."""
    out = []
    for i, res in enumerate(outputs):
        if not res.outputs:
            raise ValueError(f"vLLM result {i}: no completion")
        c = res.outputs[0]
        if c.finish_reason not in ("stop", "length"):
            raise ValueError(f"vLLM result {i}: generation ended with {c.finish_reason!r} (aborted request)")
        out.append(Generated(c.text, len(c.token_ids), c.finish_reason))
    return out


# ---- engine calls ----

def last_token_probs(engine: Engine, seqs: Sequence[Sequence[int]], token_ids: Sequence[int],
                     progress: bool = True) -> np.ndarray:
    """Next-token probabilities ``[N, K]`` of ``token_ids`` after each token sequence (see module docstring)."""
    probs = top_probs(engine.run(seqs, rating_params(engine.settings.get("top_n", TOP_N)), progress), token_ids)
    missing = np.argwhere(np.isnan(probs))
    if len(missing):  # exact query: the rating token appended, its prompt log-probability read back
        extra = [list(seqs[i]) + [token_ids[j]] for i, j in missing]
        probs[tuple(missing.T)] = appended_probs(engine.run(extra, PROMPT_LOGPROB_PARAMS, progress),
                                                 [token_ids[j] for _, j in missing])
        engine.settings["fallback_queries"] = engine.settings.get("fallback_queries", 0) + len(missing)
    return probs


def target_losses(engine: Engine, seqs: Sequence[Sequence[int]], n_targets: Sequence[int],
                  progress: bool = True) -> np.ndarray:
    """``losses.target_losses`` on vLLM: mean negative log-probability of the last ``n_targets[i]`` tokens."""
    outs = engine.run(seqs, PROMPT_LOGPROB_PARAMS, progress)
    return np.array([target_loss(o, s, n, i) for i, (o, s, n) in enumerate(zip(outs, seqs, n_targets, strict=True))])


def generate_batch(engine: Engine, prompts: Sequence[Sequence[int]], max_new_tokens: int, temperature: float = 0.0,
                   top_p: float = 1.0, seeds: Sequence[int] | None = None, stop_strings: Sequence[str] = (),
                   repetition_penalty: float = 1.0, progress: bool = False) -> list[Generated]:
    """:func:`selectune.core.generate.generate_batch` on vLLM: one request per prompt, each sampled with its own
    seed, so a reply never depends on the other requests."""
    if temperature > 0 and (seeds is None or len(seeds) != len(prompts)):
        raise ValueError("sampling needs one seed per prompt")
    params = [generation_params(max_new_tokens, temperature, top_p, seeds[i] if seeds is not None else None,
                                stop_strings, repetition_penalty) for i in range(len(prompts))]
    return generated(engine.run(prompts, params, progress))
