"""Teacher backends against a real local OpenAI-compatible HTTP server and the tiny Llama fixture."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from selectune.config import TeacherConfig
from selectune.reflection.teachers import openai_compat as teacher_openai
from selectune.reflection.teachers.base import estimate, make_teacher
from selectune.reflection.teachers.openai_compat import TeacherConfigError
from tests.fixtures import OPENAI_SERVER, ROOT
from tests.fixtures.openai_server import PLAIN, FakeOpenAI

KEY = "sk-test-9f8e7d6c5b4a-never-log-me"


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(teacher_openai, "BACKOFF_BASE_S", 0.01)
    monkeypatch.setenv("TEACHER_TEST_KEY", KEY)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def api_cfg(srv: FakeOpenAI, **kw: object) -> TeacherConfig:
    base = {"backend": "openai", "base_url": srv.url, "model": "teach-1", "api_key_env": "TEACHER_TEST_KEY",
            "timeout_s": 10.0, "max_retries": 3, "concurrency": 4, "temperature": 0.3, "top_p": 0.9,
            "max_new_tokens": 64, "seed": 7}
    return TeacherConfig(**{**base, **kw})


def test_each_fault_is_retried_then_succeeds() -> None:
    kinds = ["429", "500", "slow", "malformed", "no_choices"]
    script = {"faults": [{"kind": k, "match": f"fault {k}", "calls": [1, 2] if k == "500" else [1],
                          "retry_after": 0, "delay": 6.0} for k in kinds]
              + [{"kind": "plain", "match": "plain"}, {"kind": "no_usage", "match": "nousage"}]}
    prompts = [f"fault {k}" for k in kinds] + ["plain please", "nousage twelve chars", "fine"]
    with FakeOpenAI(script) as srv:
        t = make_teacher(api_cfg(srv, timeout_s=2.0), None)  # far from both a loaded reply and the 6 s fault
        out = t.complete([user(p) for p in prompts], progress=False)
        srv.wait_idle()
        stats = srv.stats()
    assert [c.error for c in out] == [None] * len(prompts)
    assert [c.text for c in out[:5]] == [f"reply: fault {k}" for k in kinds]
    assert stats["received"] == {"fault 429": 2, "fault 500": 3, "fault slow": 2, "fault malformed": 2,
                                 "fault no_choices": 2, "plain please": 1, "nousage twelve chars": 1, "fine": 1}
    assert stats["abandoned"] == {"fault slow": 1}  # the client gave up on the slow reply (timeout 2 s)
    assert out[5].text == PLAIN  # a reply without markers is the caller's business, returned verbatim
    # no usage in the reply: ceil(characters / 4), flagged
    assert (out[6].prompt_tokens, out[6].completion_tokens, out[6].usage_estimated) == (5, 7, True)
    assert (out[7].prompt_tokens, out[7].completion_tokens, out[7].usage_estimated) == (1, 2, False)
    assert (t.usage.calls, t.usage.retries, t.usage.failed, t.usage.estimated) == (8, 6, 0, 1)


def test_persistent_failure_is_recorded_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    script = {"faults": [{"kind": "500", "match": "always500"}, {"kind": "malformed", "match": "alwaysjunk"}]}
    prompts = ["a", "always500", "b", "alwaysjunk", "c"]
    with FakeOpenAI(script) as srv, caplog.at_level(logging.WARNING):
        t = make_teacher(api_cfg(srv, max_retries=2), None)
        out = t.complete([user(p) for p in prompts], progress=False)
        stats = srv.stats()
    assert len(out) == 5 and [c.text for c in out[::2]] == ["reply: a", "reply: b", "reply: c"]
    assert out[1].text == "" and out[1].error.startswith("HTTP 500 after 2 retries: ")
    assert out[3].text == "" and out[3].error.startswith("malformed reply after 2 retries: ")
    assert stats["received"]["always500"] == 3 and stats["received"]["alwaysjunk"] == 3
    assert (t.usage.calls, t.usage.failed, t.usage.retries) == (5, 2, 4)
    assert caplog.text.count("retry ") == 4


def test_retry_after_is_honoured() -> None:
    script = {"faults": [{"kind": "429", "match": "x", "calls": [1], "retry_after": 1}]}
    with FakeOpenAI(script) as srv:
        t = make_teacher(api_cfg(srv), None)
        start = time.monotonic()
        out = t.complete([user("x")], progress=False)
        waited = time.monotonic() - start
    assert out[0].text == "reply: x" and srv.received["x"] == 2
    assert waited >= 1.0


def test_concurrency_limit_and_parameters() -> None:
    with FakeOpenAI({"delay": 0.15}) as srv:
        t = make_teacher(api_cfg(srv, concurrency=3), None)
        out = t.complete([user(f"q{i}") for i in range(10)], progress=False)
        stats = srv.stats()
    assert [c.text for c in out] == [f"reply: q{i}" for i in range(10)]  # order kept
    assert stats["max_in_flight"] == 3 and stats["total"] == 10
    body = srv.bodies[0]
    assert {k: body[k] for k in ("model", "temperature", "top_p", "max_tokens", "seed")} == {
        "model": "teach-1", "temperature": 0.3, "top_p": 0.9, "max_tokens": 64, "seed": 7}
    assert all(h.get("authorization") == f"Bearer {KEY}" for h in srv.headers)


def test_cache_second_run_makes_no_calls(tmp_path: Path) -> None:
    script = {"faults": [{"kind": "500", "match": "broken"}]}
    prompts = ["one", "two", "broken", "two", "three"]  # a duplicate is asked once
    with FakeOpenAI(script) as srv:
        first = make_teacher(api_cfg(srv, max_retries=0), tmp_path / "teacher.sqlite")
        out1 = first.complete([user(p) for p in prompts], progress=False)
        assert srv.total == 4 and first.usage.calls == 4
        second = make_teacher(api_cfg(srv, max_retries=0), tmp_path / "teacher.sqlite")
        out2 = second.complete([user(p) for p in prompts], progress=False)
        assert srv.total == 5 and srv.received["broken"] == 2  # only the error is asked again
        other = make_teacher(api_cfg(srv, max_retries=0, temperature=0.0), tmp_path / "teacher.sqlite")
        other.complete([user("one")], progress=False)
        assert srv.total == 6  # other generation parameters: another key
    assert [c.text for c in out2] == [c.text for c in out1]
    assert [c.cached for c in out2] == [True, True, False, True, True]
    assert [c.prompt_tokens for c in out2] == [c.prompt_tokens for c in out1]
    assert (second.usage.cached, second.usage.calls) == (4, 1)


def test_kill_resume_repeats_no_finished_call(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"delay": 0.3}))
    server = subprocess.Popen([sys.executable, str(OPENAI_SERVER), "--port", "0",
                               "--script", str(script)], stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline().split()[1])
        client = tmp_path / "client.py"
        client.write_text(textwrap.dedent(f"""
            from pathlib import Path
            from selectune.config import TeacherConfig
            from selectune.reflection.teachers.base import make_teacher
            cfg = TeacherConfig(backend="openai", base_url="http://127.0.0.1:{port}/v1", model="m",
                                api_key_env="TEACHER_TEST_KEY", concurrency=2)
            out = make_teacher(cfg, Path({str(tmp_path / "cache.sqlite")!r})).complete(
                [[{{"role": "user", "content": f"p{{i}}"}}] for i in range(12)], progress=False)
            assert all(c.error is None for c in out)
        """))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        run = subprocess.Popen([sys.executable, str(client)], env=env, cwd=tmp_path)
        db = tmp_path / "cache.sqlite"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if db.is_file() and sqlite3.connect(db).execute(
                    "SELECT COUNT(*) FROM sqlite_master WHERE name='completions'").fetchone()[0]:
                if sqlite3.connect(db).execute("SELECT COUNT(*) FROM completions").fetchone()[0] >= 4:
                    break
            time.sleep(0.02)
        run.send_signal(signal.SIGKILL)
        run.wait()
        done_before = sqlite3.connect(db).execute("SELECT COUNT(*) FROM completions").fetchone()[0]
        assert 4 <= done_before < 12
        assert subprocess.run([sys.executable, str(client)], env=env, cwd=tmp_path, timeout=120).returncode == 0
        time.sleep(0.4)  # let the server notice calls abandoned by the killed client
        stats = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/stats").read())
    finally:
        server.kill()
        server.wait()
    assert stats["served"] == {f"p{i}": 1 for i in range(12)}
    assert sum(stats["abandoned"].values()) <= 2  # at most the calls in flight at the kill were asked twice
    assert stats["total"] == 12 + sum(stats["abandoned"].values())


def test_max_calls_stops_cleanly(tmp_path: Path) -> None:
    with FakeOpenAI() as srv:
        t = make_teacher(api_cfg(srv, concurrency=1, max_calls=3), tmp_path / "c.sqlite")
        out = t.complete([user(f"q{i}") for i in range(5)], progress=False)
        assert srv.total == 3
        assert [c.error for c in out] == [None] * 3 + ["budget: max_calls 3 reached"] * 2
        assert (t.usage.calls, t.usage.skipped) == (3, 2)
        again = make_teacher(api_cfg(srv, concurrency=1, max_calls=1), tmp_path / "c.sqlite")
        out = again.complete([user(f"q{i}") for i in range(5)], progress=False)
        assert srv.total == 4  # cached calls are free
    assert [c.cached for c in out] == [True] * 3 + [False] * 2
    assert [c.error is None for c in out] == [True] * 4 + [False]


def test_max_cost_stops_cleanly() -> None:
    # server usage: prompt "a b c" = 3 tokens, reply "reply: a b c" = 4 tokens -> (3*1 + 4*2) / 1e6 USD per call
    prices = {"input": 1.0, "output": 2.0}
    with FakeOpenAI() as srv:
        t = make_teacher(api_cfg(srv, concurrency=1, prices=prices, max_cost=25e-6), None)
        out = t.complete([user(f"a b {i}") for i in range(5)], progress=False)
        assert srv.total == 3  # spent 0, 11e-6, 22e-6 < 25e-6 before each call; 33e-6 stops the 4th
    assert [c.error is None for c in out] == [True] * 3 + [False] * 2
    assert out[3].error.startswith("budget: max_cost $2.5e-05 reached")
    assert t.usage.cost == pytest.approx(33e-6) and t.usage.skipped == 2


def test_api_key_never_written_or_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    script = {"faults": [{"kind": "500", "match": "bad"}, {"kind": "429", "match": "slowdown", "calls": [1],
                                                           "retry_after": 0}]}
    with FakeOpenAI(script) as srv, caplog.at_level(logging.DEBUG):
        t = make_teacher(api_cfg(srv, max_retries=1), tmp_path / "cache" / "teacher.sqlite")
        out = t.complete([user("ok"), user("bad"), user("slowdown")], progress=True)
        est = estimate([user("ok")], api_cfg(srv), tmp_path / "cache" / "teacher.sqlite")
    assert out[1].error and est["cached"] == 1
    assert srv.headers[0]["authorization"] == f"Bearer {KEY}"  # it was sent...
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".sqlite" for p in written)
    for p in written:  # ...but never stored, logged or shown
        assert KEY.encode() not in p.read_bytes(), p
    shown = caplog.text + repr(t) + str(t.usage) + str(out) + str(est) + t.id
    assert KEY not in shown and "sk-test" not in shown


def test_configuration_errors_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOpenAI({"models": ["teach-1"]}) as srv:
        with pytest.raises(TeacherConfigError, match="HTTP 404") as err:
            make_teacher(api_cfg(srv, model="nope"), None).complete([user("a"), user("b")], progress=False)
        assert KEY not in str(err.value)
        monkeypatch.delenv("TEACHER_TEST_KEY")
        with pytest.raises(ValueError, match="TEACHER_TEST_KEY"):
            make_teacher(api_cfg(srv), None)
    with pytest.raises(ValueError, match="base_url"):
        make_teacher(TeacherConfig(backend="openai"), None)
    with pytest.raises(ValueError, match="prices"):
        make_teacher(TeacherConfig(backend="openai", base_url="http://x/v1", max_cost=1.0), None)
    monkeypatch.setenv("TEACHER_TEST_KEY", KEY)
    t = make_teacher(TeacherConfig(backend="openai", base_url="http://127.0.0.1:9/v1",
                                   api_key_env="TEACHER_TEST_KEY"), None)
    with pytest.raises(ValueError, match="request 1, message 0"):
        t.complete([user("a"), [{"role": "user"}]], progress=False)


def test_estimate_openai_by_hand(tmp_path: Path) -> None:
    reqs = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a color."}],
            user("x" * 17), user("abcd")]
    cfg = TeacherConfig(backend="openai", base_url="http://127.0.0.1:9/v1", max_new_tokens=100,
                        prices={"input": 2.0, "output": 10.0})
    est = estimate(reqs, cfg)
    prompt = math.ceil(len("Be brief.Name a color.") / 4) + math.ceil(17 / 4) + 1  # 6 + 5 + 1
    assert (est["calls"], est["cached"], est["prompt_tokens"], est["max_completion_tokens"]) == (3, 0, 12, 300)
    assert est["cost"] == pytest.approx((prompt * 2.0 + 300 * 10.0) / 1e6)


@pytest.fixture(scope="module")
def hf_cfg(tiny_model: str) -> dict:
    return {"model": tiny_model, "dtype": "float32", "temperature": 0.0, "max_new_tokens": 10, "batch_size": 4,
            "repetition_penalty": 1.0}  # the references below are plain generate()


HF_PROMPTS = ["what is the sum of two and three", "list", "write a python function that returns the capital "
              "of france", "good", "how to translate the answer to french, explain"]


def test_hf_batched_equals_one_at_a_time(hf_cfg: dict) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reqs = [user(p) for p in HF_PROMPTS]
    batched = make_teacher(TeacherConfig(**hf_cfg), None).complete(reqs, progress=False)
    alone = [make_teacher(TeacherConfig(**{**hf_cfg, "batch_size": 1}), None).complete([r], progress=False)[0]
             for r in reqs]
    assert [c.text for c in batched] == [c.text for c in alone]
    tok = AutoTokenizer.from_pretrained(hf_cfg["model"])
    model = AutoModelForCausalLM.from_pretrained(hf_cfg["model"], dtype=torch.float32)
    for req, c in zip(reqs, batched, strict=True):  # independent reference: plain greedy generate, no padding
        ids = tok(tok.apply_chat_template(req, tokenize=False, add_generation_prompt=True),
                  add_special_tokens=False, return_tensors="pt")["input_ids"]
        ref = model.generate(ids, max_new_tokens=10, do_sample=False)[0, ids.shape[1]:]
        assert c.prompt_tokens == ids.shape[1]
        assert c.completion_tokens == len(ref) and c.text == tok.decode(ref, skip_special_tokens=True)


def test_hf_sampling_ignores_batch_neighbours(hf_cfg: dict, tmp_path: Path) -> None:
    cfg = TeacherConfig(**{**hf_cfg, "temperature": 1.0, "top_p": 0.9})
    reqs = [user(p) for p in HF_PROMPTS]
    batched = make_teacher(cfg, tmp_path / "c.sqlite").complete(reqs, progress=False)
    reversed_alone = [make_teacher(TeacherConfig(**{**cfg.model_dump(), "batch_size": 1}), None)
                      .complete([r], progress=False)[0] for r in reqs[::-1]]
    assert [c.text for c in batched] == [c.text for c in reversed_alone[::-1]]
    other_seed = make_teacher(TeacherConfig(**{**cfg.model_dump(), "seed": 1}), None).complete(reqs, progress=False)
    assert [c.text for c in other_seed] != [c.text for c in batched]
    again = make_teacher(cfg, tmp_path / "c.sqlite")
    assert [c.text for c in again.complete(reqs, progress=False)] == [c.text for c in batched]
    assert again._model is None and again.usage.cached == 5  # fully cached: the model is never loaded
    capped = make_teacher(TeacherConfig(**{**cfg.model_dump(), "max_calls": 2}), None)
    out = capped.complete(reqs, progress=False)
    assert sum(c.error is None for c in out) == 2 and capped.usage.skipped == 3


def test_estimate_hf_counts_with_tokenizer(hf_cfg: dict, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(hf_cfg["model"])
    reqs = [user(p) for p in HF_PROMPTS[:3]]
    cfg = TeacherConfig(**hf_cfg)
    make_teacher(cfg, tmp_path / "c.sqlite").complete(reqs[:1], progress=False)
    est = estimate(reqs, cfg, tmp_path / "c.sqlite")
    counts = [len(tok(tok.apply_chat_template(r, tokenize=False, add_generation_prompt=True),
                      add_special_tokens=False)["input_ids"]) for r in reqs]
    assert est["cached_indices"] == [0] and est["calls"] == 2
    assert est["prompt_tokens"] == counts[1] + counts[2] and est["max_completion_tokens"] == 20
    assert est["cost"] == 0.0 and est["token_count"] == "tokenizer"


@pytest.mark.slow
def test_smollm2_teacher_smoke() -> None:
    cfg = TeacherConfig(model="smollm2-135m-instruct", temperature=0.0, max_new_tokens=16)
    t = make_teacher(cfg, None)
    out = t.complete([user("What is the capital of France?"), user("Say hello.")], progress=False)
    assert all(c.error is None and c.text.strip() for c in out)
    assert "Paris" in out[0].text
    assert all(0 < c.completion_tokens <= 16 for c in out) and t.usage.calls == 2
