"""The vLLM server client (``vllm.base_url``): request bodies and the parsing of vLLM's completions JSON (hand-built
replies in the format vLLM's source writes), then against a vLLM-shaped server on 127.0.0.1
(``tests/fixtures/vllm_server.py``): batching, the served model and tokenizer checks, keys, adapters loaded at
run time, and a clear error for each way a server can disagree. That every stage gives the transformers numbers
through a server is tested with the in-process engine in ``test_vllm.py`` (its ``server`` parameter)."""

from __future__ import annotations

import math
import socket

import numpy as np
import pytest

from selectune.core import vllm
from selectune.core.config import VLLMOptions
from selectune.core.vllm_server import batches, parse_choice, parse_response, request_body
from tests.fixtures.vllm_server import FakeVLLM

# vLLM's reply to prompt=[[1, 2, 3], [4, 5]], max_tokens=1, logprobs=2, return_tokens_as_token_ids, return_token_ids:
# each step's top_logprobs holds the sampled token first, then the top 2 (3 entries when it is not among them)
RATED = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m", "choices": [
    {"index": 1, "text": " a", "logprobs": {"text_offset": [0], "token_logprobs": [-2.3], "tokens": ["token_id:42"],
                                            "top_logprobs": [{"token_id:42": -2.3, "token_id:7": -0.4,
                                                              "token_id:9": -1.1}]},
     "finish_reason": "length", "stop_reason": None, "prompt_logprobs": None, "token_ids": [42],
     "prompt_token_ids": [4, 5]},
    {"index": 0, "text": " the", "logprobs": {"text_offset": [0], "token_logprobs": [-0.5], "tokens": ["token_id:11"],
                                              "top_logprobs": [{"token_id:11": -0.5, "token_id:13": -1.2}]},
     "finish_reason": "length", "stop_reason": None, "prompt_logprobs": None, "token_ids": [11],
     "prompt_token_ids": [1, 2, 3]}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}
# and to prompt=[791, 6864, 315], prompt_logprobs=1, max_tokens=1 (keys are the ids as JSON strings; -inf -> -9999)
PROMPT_LPS = {"index": 0, "text": " the", "logprobs": None, "finish_reason": "length", "stop_reason": None,
              "prompt_logprobs": [None, {"6864": {"logprob": -5.1, "rank": 12, "decoded_token": " capital"},
                                         "279": {"logprob": -1.9, "rank": 1, "decoded_token": " first"}},
                                  {"315": {"logprob": -9999.0, "rank": 30000, "decoded_token": " of"}}],
              "token_ids": [279], "prompt_token_ids": None}


def test_request_body_sends_token_ids_and_the_sampling_fields_by_their_vllm_names() -> None:
    body = request_body("m", [(1, 2), [3]], vllm.generation_params(8, 0.7, 0.9, 5, ["[End]"], 1.1))
    assert body == {"model": "m", "prompt": [[1, 2], [3]], "n": 1, "temperature": 0.7, "top_p": 0.9, "max_tokens": 8,
                    "repetition_penalty": 1.1, "skip_special_tokens": True, "seed": 5, "stop": ["[End]"],
                    "include_stop_str_in_output": True, "return_tokens_as_token_ids": True,
                    "return_token_ids": True}
    assert "seed" not in request_body("m", [[1]], {"max_tokens": 1, "seed": None})


def test_replies_parse_into_the_in_process_result_structure() -> None:
    a, b = parse_response(RATED, [[1, 2, 3], [4, 5]], "srv")  # by index, not by position in the list
    assert a.outputs[0].token_ids == [11] and b.outputs[0].token_ids == [42] and b.prompt_token_ids == [4, 5]
    probs = vllm.top_probs([a, b], [13, 7, 99])
    np.testing.assert_allclose(probs[0, :2], [math.exp(-1.2), np.nan])
    np.testing.assert_allclose(probs[1, :2], [np.nan, math.exp(-0.4)])
    assert np.isnan(probs[:, 2]).all()  # 99 returned by neither: the engine then queries it exactly
    res = parse_choice(PROMPT_LPS, [791, 6864, 315], "srv")
    assert res.prompt_logprobs[0] is None and res.prompt_logprobs[1][6864].rank == 12
    assert vllm.target_loss(res, [791, 6864, 315], 2) == pytest.approx((5.1 + 9999.0) / 2)
    assert vllm.appended_probs([res], [315])[0] == 0.0


def test_replies_that_cannot_be_read_say_why() -> None:
    with pytest.raises(ValueError, match=r"2 prompts"):
        parse_response({"choices": RATED["choices"][:1]}, [[1], [2]], "srv")
    legacy = {**RATED["choices"][1], "logprobs": {**RATED["choices"][1]["logprobs"], "top_logprobs": [{" the": -0.5}]}}
    with pytest.raises(ValueError, match="srv: top log-probability key ' the' is a token string.*"
                                         "return_tokens_as_token_ids"):
        parse_choice(legacy, [1], "srv")
    with pytest.raises(ValueError, match="no token_ids.*0.10.2"):
        parse_choice({**PROMPT_LPS, "token_ids": None}, [1], "srv")


def test_requests_group_equal_parameters_up_to_the_batch_size() -> None:
    a, b = {"max_tokens": 1}, {"max_tokens": 2}
    assert batches([a, a, a, b, b, a], 2) == [[0, 1], [2], [3, 4], [5]]
    assert batches([], 4) == []


def test_server_engine_batches_and_records_what_it_talked_to(tiny_model: str) -> None:
    with FakeVLLM(tiny_model, max_logprobs=20) as srv:
        opts = VLLMOptions(base_url=srv.url, prompts_per_request=3, concurrency=2, top_logprobs=3)
        engine = vllm.load_engine(tiny_model, options=opts)
        seqs = [[1, 5, 9, 12][: 2 + i % 3] for i in range(7)]
        probs = vllm.last_token_probs(engine, seqs, [20, 21], progress=False)
        ref = vllm.last_token_probs(srv.engine, seqs, [20, 21], progress=False)  # the same model in process
        np.testing.assert_allclose(probs, ref, rtol=1e-6)
        rated = [b for b in srv.bodies if b.get("logprobs") == 3]
        assert [len(b["prompt"]) for b in rated] == [3, 3, 1] and all(b["model"] == "served-model" for b in rated)
        assert engine.settings | {"server": None} == {
            "backend": "vllm", "server": None, "served_model": "served-model", "served_root": tiny_model,
            "vllm_version": "0.0.0+fake",
            "model": tiny_model, "max_model_len": 2048, "top_n": 3, "seed": 0,
            "fallback_queries": engine.settings["fallback_queries"], "adapter": None}
        assert engine.settings["server"] == srv.url


def test_server_disagreements_fail_with_the_reason(tiny_model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeVLLM(tiny_model, max_logprobs=5) as srv:
        engine = vllm.load_engine(tiny_model, options=VLLMOptions(base_url=srv.url))  # asks for 20
        with pytest.raises(RuntimeError, match="HTTP 400 for 2 prompts of 2-3 tokens: Requested sample logprobs of "
                                               "20, which is greater than max allowed: 5"):
            vllm.last_token_probs(engine, [[1, 2], [3, 4, 5]], [20], progress=False)
        with pytest.raises(RuntimeError, match=r"serves \['served-model'\]: set vllm.served_model"):
            vllm.load_engine(tiny_model, options=VLLMOptions(base_url=srv.url, served_model="other"))
        monkeypatch.setattr(srv, "tokenize", lambda body: {"tokens": [1, 2, 3], "count": 3})
        with pytest.raises(RuntimeError, match="tokenizes differently"):
            vllm.load_engine(tiny_model, options=VLLMOptions(base_url=srv.url))
    with FakeVLLM(tiny_model, legacy=True) as old:
        engine = vllm.load_engine(tiny_model, options=VLLMOptions(base_url=old.url))
        with pytest.raises(ValueError, match="return_tokens_as_token_ids"):
            vllm.last_token_probs(engine, [[1, 2]], [20], progress=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    with pytest.raises(RuntimeError, match="unreachable.*vllm serve"):
        vllm.load_engine(tiny_model, options=VLLMOptions(base_url=closed))


def test_server_key_comes_from_the_environment_and_is_recorded_nowhere(
        tiny_model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-vllm-test-0123456789"
    with FakeVLLM(tiny_model, api_key=secret) as srv:
        with pytest.raises(RuntimeError, match="HTTP 401"):
            vllm.load_engine(tiny_model, options=VLLMOptions(base_url=srv.url))
        with pytest.raises(RuntimeError, match="VLLM_KEY is not set"):
            vllm.load_engine(tiny_model, options=VLLMOptions(base_url=srv.url, api_key_env="VLLM_KEY"))
        monkeypatch.setenv("VLLM_KEY", secret)
        engine = vllm.load_engine(tiny_model, options=VLLMOptions(base_url=srv.url, api_key_env="VLLM_KEY"))
        assert vllm.last_token_probs(engine, [[1, 2]], [20], progress=False).shape == (1, 1)
        assert secret not in repr(engine.settings)


def test_a_server_needs_no_local_vllm_and_does_not_change_stage_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from selectune.core.config import output_fields
    from selectune.selectit.config import SelectITConfig

    monkeypatch.setattr(vllm, "unavailable", lambda: "vLLM is not installed")
    with pytest.raises(ValidationError, match="not installed"):
        SelectITConfig(backend="vllm")
    cfg = SelectITConfig(models=["a"], backend="vllm", vllm={"base_url": "http://10.0.0.5:8000/v1",
                                                             "served_model": "m", "concurrency": 4})
    in_process = SelectITConfig.model_construct(**{**dict(cfg), "vllm": VLLMOptions()})
    assert output_fields(cfg) == output_fields(in_process)
    with pytest.raises(ValidationError, match="not an http"):
        VLLMOptions(base_url="10.0.0.5:8000")
    with pytest.raises(ValidationError, match="one vLLM server serves one model, and 2 raters"):
        SelectITConfig(models=["a", "b"], backend="vllm", vllm={"base_url": "http://h:1/v1"})
    per_model = VLLMOptions(base_url={"a": "http://h:1/v1", "b": "http://h:2/v1"})
    SelectITConfig(models=["a", "b"], backend="vllm", vllm=per_model)
    assert (per_model.server_for("b"), per_model.server_for("c")) == ("http://h:2/v1", None)  # c: in process
    with pytest.raises(ValidationError, match="not an http"):
        VLLMOptions(base_url={"a": "h:1"})


def test_an_adapter_is_loaded_into_the_server_and_answers_as_in_process(tiny_model: str, tmp_path) -> None:
    from peft import LoraConfig, get_peft_model

    from selectune.core.generate import generate_batch
    from selectune.core.lora import load_adapter, write_meta
    from selectune.core.models import load_causal_lm

    base, tok = load_causal_lm(tiny_model, "float32", "cpu")
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    folder = tmp_path / "adapter"
    lora.save_pretrained(folder)
    tok.save_pretrained(folder)
    write_meta(folder, tiny_model, "alpaca", 64, "float32")
    prompts = [[1, 5, 9], [2, 7]]
    model, _ = load_adapter(folder, "cpu", "float32")
    ref = [g.text for g in generate_batch(model, tok, prompts, 6)]
    assert ref != [g.text for g in generate_batch(load_causal_lm(tiny_model, "float32", "cpu")[0], tok, prompts, 6)]
    with FakeVLLM(tiny_model) as srv:
        opts = VLLMOptions(base_url=srv.url)
        engine = vllm.load_engine(tiny_model, options=opts, adapter=str(folder))
        name = engine.settings["served_model"]
        assert name.startswith("selectune-") and srv.adapters == {name: str(folder.resolve())}
        assert [g.text for g in vllm.generate_batch(engine, prompts, 6)] == ref
        assert vllm.load_engine(tiny_model, options=opts, adapter=str(folder)).settings["served_model"] == name
        assert len(srv.adapters) == 1  # found on the server, not loaded twice
    with FakeVLLM(tiny_model, lora_updating=False) as srv:
        with pytest.raises(RuntimeError, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING"):
            vllm.load_engine(tiny_model, options=VLLMOptions(base_url=srv.url), adapter=str(folder))


def test_each_rater_is_rated_by_its_own_server(tiny_model: str, tiny_model_2: str, records) -> None:
    from selectune.selectit.config import SelectITConfig
    from selectune.selectit.rater import rate, rating_prompts

    hf = SelectITConfig(models=[tiny_model, tiny_model_2], dtype="float32", num_prompts=2)
    prompts, records = rating_prompts(hf), records.head(4)
    with FakeVLLM(tiny_model) as one, FakeVLLM(tiny_model_2) as two:
        cfg = SelectITConfig(models=[tiny_model, tiny_model_2], dtype="float32", num_prompts=2, backend="vllm",
                             vllm={"base_url": {tiny_model: one.url, tiny_model_2: two.url}})
        for model, srv, other in ((tiny_model, one, two), (tiny_model_2, two, one)):
            before = len(other.bodies)
            got = rate(records, model, cfg, prompts, None, progress=False)
            np.testing.assert_allclose(got.probs, rate(records, model, hf, prompts, None, progress=False).probs,
                                       atol=1e-5, rtol=0)
            assert got.engine["server"] == srv.url and len(other.bodies) == before


def test_score_commands_take_a_server_url(tiny_model: str, tmp_path) -> None:
    import pandas as pd
    from typer.testing import CliRunner

    from selectune.cli.main import app
    from tests.fixtures import DEMO

    def score(*extra: str) -> pd.DataFrame:
        out = tmp_path / f"{len(extra)}.parquet"
        res = CliRunner().invoke(app, ["score", "selectit", "-i", str(DEMO), "-o", str(out), "-m", tiny_model,
                                       "--num-prompts", "2", "--limit", "6", "--dtype", "float32", "--no-cache",
                                       *extra])
        assert res.exit_code == 0, res.output
        return pd.read_parquet(out)

    with FakeVLLM(tiny_model) as srv:
        got = score("--vllm-url", srv.url)
        assert len(srv.bodies) > 0
    pd.testing.assert_series_equal(got["selectit_score"], score()["selectit_score"], atol=1e-5, rtol=0)
    res = CliRunner().invoke(app, ["score", "selectit", "-i", str(DEMO), "-o", str(tmp_path / "x.parquet"),
                                   "--backend", "hf", "--vllm-url", "http://127.0.0.1:1/v1"])
    assert res.exit_code == 2 and "--vllm-url needs the vLLM backend" in res.output
    res = CliRunner().invoke(app, ["score", "selectit", "-i", str(DEMO), "-o", str(tmp_path / "x.parquet"),
                                   "--vllm-url", "http://127.0.0.1:1/v1"])  # the two default raters
    assert res.exit_code == 2 and "name a server per rater" in res.output


def test_a_failed_request_stops_the_queued_ones(tiny_model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeVLLM(tiny_model) as srv:
        engine = vllm.load_engine(tiny_model, options=VLLMOptions(base_url=srv.url, prompts_per_request=1,
                                                                  concurrency=1))
        answer = srv.complete
        monkeypatch.setattr(srv, "complete", lambda body: answer({**body, "typo": 1}) if body["prompt"] == [[3, 4]]
                            else answer(body))
        with pytest.raises(RuntimeError, match=r"HTTP 400 for 1 prompts of 2-2 tokens: unknown fields \['typo'\]"):
            vllm.last_token_probs(engine, [[1, 2], [3, 4]] + [[5, 6]] * 20, [20], progress=False)
        assert len(srv.bodies) <= 2  # [1, 2] answered, [3, 4] refused, at most one more in flight; the rest unsent
