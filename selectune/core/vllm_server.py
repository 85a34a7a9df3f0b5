"""A running vLLM server as the engine (``vllm.base_url``): the requests of :mod:`selectune.core.vllm`, sent to the
server's OpenAI-compatible ``/v1/completions`` with token-id prompts, and its JSON read back into the result
structure the in-process engine's parsers read (``RequestOutput`` / ``CompletionOutput`` / ``Logprob``), so the
numbers, the exact fallback query for a rating token outside the returned top log-probabilities, and the caches
are the same. This machine needs neither vLLM nor a GPU: ``vllm serve MODEL`` runs wherever they are.

Wire format (vLLM's ``CompletionRequest`` / ``CompletionResponseChoice``): every sampling field is a request field of
the same name; ``return_tokens_as_token_ids`` makes the top log-probabilities' keys ``"token_id:<id>"`` (token
strings can collide), ``return_token_ids`` returns each reply's token ids; ``prompt_logprobs`` comes back per
choice as one ``{"<id>": {"logprob", "rank", "decoded_token"}}`` per prompt position (``null`` first). Prompts
are tokenized here by the model's own tokenizer, which is checked against the server's ``/tokenize`` once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

from selectune.core.vllm import Engine

TOKEN_ID = "token_id:"
RETURN_IDS = {"return_tokens_as_token_ids": True, "return_token_ids": True}
PROBE = "Rate the response 1-5 :\n\tÜber naïve café 東京 😀 1 2 3 10"  # what /tokenize must split as we do
RETRIES = 3


@dataclass
class Logprob:  # vllm.logprobs.Logprob
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:  # vllm.outputs.CompletionOutput (the fields selectune reads)
    index: int
    text: str
    token_ids: list[int]
    logprobs: list[dict[int, Logprob]] | None = None
    finish_reason: str | None = "stop"


@dataclass
class RequestOutput:  # vllm.outputs.RequestOutput (the fields selectune reads)
    prompt_token_ids: list[int]
    prompt_logprobs: list[dict[int, Logprob] | None] | None
    outputs: list[CompletionOutput] = field(default_factory=list)


# ---- requests and results (pure) ----

def request_body(model: str, prompts: Sequence[Sequence[int]], params: Mapping[str, Any]) -> dict[str, Any]:
    """One ``/v1/completions`` body: token-id prompts, the sampling fields as given (None left out)."""
    return {"model": model, "prompt": [list(p) for p in prompts],
            **{k: v for k, v in params.items() if v is not None}, **RETURN_IDS}


def _token_id(key: str, where: str) -> int:
    if not key.startswith(TOKEN_ID):
        raise ValueError(f"{where}: top log-probability key {key!r} is a token string, not 'token_id:<id>' (the "
                         "server ignored return_tokens_as_token_ids: is it vLLM?)")
    return int(key[len(TOKEN_ID):])


def parse_choice(choice: Mapping[str, Any], prompt: Sequence[int], where: str) -> RequestOutput:
    """One choice of a completions response as a ``RequestOutput``."""
    steps = None
    if (lps := choice.get("logprobs")) is not None and lps.get("top_logprobs") is not None:
        steps = [{_token_id(k, where): Logprob(float(v)) for k, v in (top or {}).items()}
                 for top in lps["top_logprobs"]]
    prompt_lps = choice.get("prompt_logprobs")
    if prompt_lps is not None:
        prompt_lps = [None if pos is None else
                      {int(k): Logprob(float(v["logprob"]), v.get("rank"), v.get("decoded_token"))
                       for k, v in pos.items()} for pos in prompt_lps]
    if (ids := choice.get("token_ids")) is None:
        raise ValueError(f"{where}: no token_ids in the reply (the server ignored return_token_ids, which vLLM "
                         "has answered since 0.10.2: upgrade the server)")
    return RequestOutput(list(prompt), prompt_lps, [CompletionOutput(0, str(choice.get("text") or ""), list(ids),
                                                                     steps, choice.get("finish_reason"))])


def parse_response(resp: Mapping[str, Any], prompts: Sequence[Sequence[int]], where: str) -> list[RequestOutput]:
    """The choices of a response to ``prompts`` (n = 1), one per prompt in prompt order."""
    choices = resp.get("choices")
    if not isinstance(choices, list):
        raise ValueError(f"{where}: the reply has no choices list")
    by_index = {int(c["index"]): c for c in choices}
    if sorted(by_index) != list(range(len(prompts))):
        raise ValueError(f"{where}: {len(choices)} choices (indices {sorted(by_index)[:8]}) for {len(prompts)} "
                         "prompts")
    return [parse_choice(by_index[i], p, f"{where}, prompt {i}") for i, p in enumerate(prompts)]


def batches(params: Sequence[Mapping[str, Any]], size: int) -> list[list[int]]:
    """Consecutive prompts with equal parameters grouped into requests of at most ``size`` prompts."""
    out: list[list[int]] = []
    for i, p in enumerate(params):
        if out and len(out[-1]) < size and params[out[-1][-1]] == p:
            out[-1].append(i)
        else:
            out.append([i])
    return out


# ---- the engine ----

class ServerEngine(Engine):
    """An :class:`~selectune.core.vllm.Engine` whose ``run`` posts to a vLLM server."""

    def __init__(self, client: Any, served: str, tok: Any, settings: dict[str, Any], concurrency: int,
                 per_request: int) -> None:
        super().__init__(llm=None, settings=settings)
        self.client, self.served, self.tok = client, served, tok
        self.concurrency, self.per_request = concurrency, per_request

    def tokenizer(self) -> Any:
        return self.tok

    def run(self, seqs: Sequence[Sequence[int]], params: Mapping[str, Any] | Sequence[Mapping[str, Any]],
            progress: bool = True) -> list[Any]:
        from tqdm.auto import tqdm

        per = [params] * len(seqs) if isinstance(params, Mapping) else list(params)
        groups = batches(per, self.per_request)
        out: list[Any] = [None] * len(seqs)
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(groups)))) as pool, \
                tqdm(total=len(seqs), desc="vLLM server", unit="prompt", disable=not progress) as bar:
            futures = {pool.submit(self._post, [seqs[i] for i in g], per[g[0]]): g for g in groups}
            try:
                for done in as_completed(futures):
                    for i, res in zip(futures[done], done.result(), strict=True):
                        out[i] = res
                    bar.update(len(futures[done]))
            except BaseException:
                for f in futures:  # a failed request stops the queued ones (those in flight finish)
                    f.cancel()
                raise
        return out

    def _post(self, prompts: list[Sequence[int]], params: Mapping[str, Any]) -> list[RequestOutput]:
        import openai

        body = request_body(self.served, prompts, params)
        where = f"vLLM server {self.settings['server']}"
        try:
            raw = self.client.completions.with_raw_response.create(
                model=body.pop("model"), prompt=body.pop("prompt"), extra_body=body)
        except openai.APIStatusError as err:  # vLLM's message, not the client's "Error code: ..." wrapping
            said = err.body.get("message", err.message) if isinstance(err.body, dict) else err.message
            raise RuntimeError(f"{where}: HTTP {err.status_code} for {len(prompts)} prompts of "
                               f"{min(map(len, prompts))}-{max(map(len, prompts))} tokens: {said}") from None
        except openai.APIConnectionError as err:
            raise RuntimeError(f"{where} is unreachable after {RETRIES} retries: {err.__cause__ or err}") from None
        return parse_response(raw.http_response.json(), prompts, where)


def connect(model: str, url: str, options: Any, seed: int = 0, trust_remote_code: bool = False,
            adapter: str | None = None) -> ServerEngine:
    """A :class:`ServerEngine` on the server at ``url`` (``options``: a VLLMOptions): the served model found, the
    tokenizer of ``model`` loaded here and checked against the server's, ``adapter`` (a LoRA folder the server can
    read) loaded into the server at run time."""
    import httpx
    import openai

    from selectune.core import models

    url = url.rstrip("/")
    key = None
    if options.api_key_env:
        if not (key := os.environ.get(options.api_key_env)):
            raise RuntimeError(f"vllm.api_key_env: the environment variable {options.api_key_env} is not set")
    client = openai.OpenAI(base_url=url, api_key=key or "EMPTY", max_retries=RETRIES, timeout=options.timeout_s)
    root = url.removesuffix("/v1")
    http = httpx.Client(base_url=root, timeout=min(options.timeout_s, 60.0),
                        headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        cards = {m["id"]: m for m in _get(http, "/v1/models", url)["data"]}
        bases = [n for n, m in cards.items() if not m.get("parent")]  # LoRA adapters name their base as parent
        served = options.served_model or (bases[0] if len(bases) == 1 else None)
        if served not in cards:
            raise RuntimeError(f"vLLM server {url} serves {bases}: set vllm.served_model to the one for {model!r}")
        tok = models.load_tokenizer(model, trust_remote_code)
        answer = _post_json(http, "/tokenize", {"model": served, "prompt": PROBE, "add_special_tokens": False}, url)
        if (theirs := answer.get("tokens")) != (ours := tok.encode(PROBE, add_special_tokens=False)):
            raise RuntimeError(f"vLLM server {url}: {served!r} tokenizes differently from {model!r} "
                               f"({(theirs or [])[:12]} vs {ours[:12]}): serve the same model, or set model to what "
                               "it serves")
        version = _get(http, "/version", url).get("version")
        max_model_len, served_root = cards[served].get("max_model_len"), cards[served].get("root")
        if adapter:
            served = _load_adapter(http, url, adapter, cards)
    finally:
        http.close()
    settings = {"backend": "vllm", "server": url, "served_model": served, "served_root": served_root,
                "vllm_version": version, "model": model, "max_model_len": max_model_len,
                "top_n": options.top_logprobs, "seed": seed, "fallback_queries": 0, "adapter": adapter}
    return ServerEngine(client, served, tok, settings, options.concurrency, options.prompts_per_request)


def _load_adapter(http: Any, url: str, adapter: str, cards: Mapping[str, Any]) -> str:
    """The name the server knows the LoRA folder ``adapter`` by: a name of its weights' digest, loaded at run time
    (``POST /v1/load_lora_adapter``) unless already there."""
    from pathlib import Path

    from selectune.core.digests import file_digest

    name = f"selectune-{file_digest(Path(adapter) / 'adapter_model.safetensors')[:16]}"
    if name in cards:
        return name
    _send(lambda: http.post("/v1/load_lora_adapter", json={"lora_name": name,
                                                             "lora_path": str(Path(adapter).resolve())}),
          "/v1/load_lora_adapter", url, f"start it with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, on a "
          f"machine that can read {adapter}")
    return name


def _get(http: Any, path: str, url: str) -> Any:
    return _send(lambda: http.get(path), path, url).json()


def _post_json(http: Any, path: str, body: Mapping[str, Any], url: str) -> Any:
    return _send(lambda: http.post(path, json=body), path, url).json()


def _send(send: Any, path: str, url: str,
          hint: str = "is it a vLLM server, and its key set in vllm.api_key_env?") -> Any:
    """The response of ``send()``; an unreachable server or an answer other than 200 is an error naming both."""
    import httpx

    try:
        resp = send()
    except httpx.HTTPError as err:
        raise RuntimeError(f"vLLM server {url} is unreachable ({type(err).__name__}: {err}): start it (vllm serve "
                           "MODEL) or check vllm.base_url") from None
    if resp.status_code != 200:
        raise RuntimeError(f"vLLM server {url}: {path} answered HTTP {resp.status_code}: {resp.text[:300]} ({hint})")
    return resp
