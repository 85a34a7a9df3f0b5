"""vLLM backend. On CPU: the choice is refused at config validation with what to install; requests and results
follow vLLM's documented structures (hand-built results, and results computed by a transformers model through
``tests/fixtures/vllm_shaped.py``), and every stage wired to ``backend: vllm`` gives the transformers path's
numbers. The GPU tests need CUDA and vLLM and skip without them; they compare real vLLM with the transformers
paths on the embedded gemma-3-270m in bfloat16: rating probabilities within 2e-2 absolute, IFD losses within 5e-2.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from selectune.core import vllm
from tests.fixtures.vllm_server import FakeVLLM
from tests.fixtures.vllm_shaped import CompletionOutput, Logprob, ReferenceEngine, RequestOutput

HAS_VLLM = importlib.util.find_spec("vllm") is not None


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


WHY = r"pip install 'selectune\[vllm\]'" if not HAS_VLLM else "CUDA GPU"


def test_choosing_vllm_without_it_fails_when_the_config_loads() -> None:
    if HAS_VLLM and _cuda():
        pytest.skip("vLLM and a GPU are both present: the error path cannot be reached")
    from selectune.config import IFDConfig, JudgeConfig, ReflectionConfig, SelectITConfig, TeacherConfig, load_config
    from selectune.evaluation.config import EvalConfig

    for build in (lambda: SelectITConfig(backend="vllm"), lambda: IFDConfig(backend="vllm"),
                  lambda: EvalConfig(backend="vllm"),
                  lambda: TeacherConfig(backend="vllm"), lambda: JudgeConfig(backend="vllm"),
                  lambda: ReflectionConfig(student={"backend": "vllm"}), lambda: load_config(None, "vllm")):
        with pytest.raises(ValidationError, match=WHY):
            build()
    with pytest.raises(RuntimeError, match=WHY):
        vllm.load_engine("gemma-3-270m")


def test_cli_refuses_vllm_before_reading_anything(tmp_path) -> None:
    if HAS_VLLM and _cuda():
        pytest.skip("vLLM and a GPU are both present")
    from typer.testing import CliRunner

    from selectune.cli.main import app

    res = CliRunner().invoke(app, ["score", "selectit", "-i", str(tmp_path / "absent.json"), "-o",
                                   str(tmp_path / "o.parquet"), "--backend", "vllm"])
    assert res.exit_code != 0 and "selectune[vllm]" in res.output and not (tmp_path / "o.parquet").exists()


def test_run_backend_reaches_every_local_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from selectune.config import with_backend

    raw = with_backend({"reflection": {"teacher": {"backend": "openai", "base_url": "http://x/v1"}}}, "vllm")
    assert raw["selectit"]["backend"] == raw["ifd"]["backend"] == raw["judge"]["backend"] == "vllm"
    assert raw["eval"]["backend"] == "vllm"
    assert raw["reflection"]["student"]["backend"] == "vllm"
    assert raw["reflection"]["teacher"] == {"backend": "openai", "base_url": "http://x/v1"}  # remote stays remote
    assert with_backend({}, "vllm")["reflection"]["teacher"]["backend"] == "vllm"


# ---- requests and results, hand-built ----

def _rated(*tops: dict[int, float]) -> list[RequestOutput]:
    return [RequestOutput([1, 2], None, [CompletionOutput(0, "", [7], [{t: Logprob(lp) for t, lp in d.items()}])])
            for d in tops]


def test_rating_params_and_top_probs() -> None:
    assert vllm.rating_params(5) == {"max_tokens": 1, "temperature": 0.0, "logprobs": 5}
    probs = vllm.top_probs(_rated({11: math.log(0.5), 12: math.log(0.25), 99: -0.1}, {12: math.log(0.125)}),
                           [11, 12])
    np.testing.assert_allclose(probs[0], [0.5, 0.25])
    assert np.isnan(probs[1, 0]) and probs[1, 1] == pytest.approx(0.125)
    empty = [RequestOutput([1], None, [CompletionOutput(0, "", [7], None)])]
    with pytest.raises(ValueError, match="result 0: no logprobs"):
        vllm.top_probs(empty, [11])


def test_appended_probs_and_target_loss() -> None:
    res = RequestOutput([1, 5, 7], [None, {5: Logprob(-1.0), 9: Logprob(-0.5)}, {7: Logprob(-2.0)}])
    assert vllm.target_loss(res, [1, 5, 7], 2) == pytest.approx(1.5)  # (1 + 2) / 2
    assert vllm.target_loss(res, [1, 5, 7], 1) == pytest.approx(2.0)
    assert vllm.appended_probs([res], [7])[0] == pytest.approx(math.exp(-2.0))
    with pytest.raises(ValueError, match="rating token 8 is missing"):
        vllm.appended_probs([res], [8])
    with pytest.raises(ValueError, match="no log-probability for prompt token 6 at position 1"):
        vllm.target_loss(res, [1, 6, 7], 2, 0)
    with pytest.raises(ValueError, match="2 prompt log-probabilities for a 3-token prompt"):
        vllm.target_loss(RequestOutput([1, 5, 7], res.prompt_logprobs[:2]), [1, 5, 7], 1)
    with pytest.raises(ValueError, match="need 1 <= n < length"):
        vllm.target_loss(res, [1, 5, 7], 3)


def test_generation_params_and_generated() -> None:
    greedy = vllm.generation_params(32, 0.0, 0.9, 123)
    assert greedy["temperature"] == 0.0 and greedy["top_p"] == 1.0 and "seed" not in greedy and "stop" not in greedy
    sampled = vllm.generation_params(32, 0.7, 0.9, 123, ("[End]",), 1.2)
    assert sampled == {"n": 1, "temperature": 0.7, "top_p": 0.9, "max_tokens": 32, "seed": 123,
                      "repetition_penalty": 1.2, "skip_special_tokens": True, "stop": ["[End]"],
                      "include_stop_str_in_output": True}
    outs = [RequestOutput([1], None, [CompletionOutput(0, "a [End]", [4, 5, 6], None, "stop")]),
            RequestOutput([1], None, [CompletionOutput(0, "bb", [4, 5], None, "length")])]
    got = vllm.generated(outs)
    assert [(g.text, g.n_tokens, g.finish_reason) for g in got] == [("a [End]", 3, "stop"), ("bb", 2, "length")]
    with pytest.raises(ValueError, match="result 0: generation ended with 'abort'"):
        vllm.generated([RequestOutput([1], None, [CompletionOutput(0, "", [], None, "abort")])])
    with pytest.raises(ValueError, match="sampling needs one seed per prompt"):
        vllm.generate_batch(ReferenceEngine.__new__(ReferenceEngine), [[1]], 4, temperature=0.7)


# ---- the stages on vLLM-shaped results computed by a transformers model ----

@dataclass
class Here:
    """Where ``backend: vllm`` runs in a test: the config's ``vllm`` options, the reference engines answering
    (their ``requests``: every (prompt, sampling fields) answered), and how many engines were loaded."""

    opts: dict
    engines: list[ReferenceEngine]
    loads: list[str]

    @property
    def requests(self) -> list:
        return [r for e in self.engines for r in e.requests]


@pytest.fixture(params=["engine", "server"])
def vllm_here(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tiny_model: str):
    """backend: vllm accepted, every engine a ReferenceEngine on the tiny model, in process ("engine") or behind a
    vLLM-shaped server on 127.0.0.1 reached through ``vllm.base_url`` ("server"); top 3 log-probabilities, so rating
    tokens fall outside them and take the exact fallback query."""
    from selectune.core import vllm_server

    if request.param == "engine":
        here = Here({"top_logprobs": 3}, [], [])

        def load(model: str, *args, **kwargs) -> ReferenceEngine:
            here.engines.append(ReferenceEngine(model, top_n=3))
            here.loads.append(model)
            return here.engines[-1]

        monkeypatch.setattr(vllm, "unavailable", lambda: None)
        monkeypatch.setattr(vllm, "load_engine", load)
        yield here
        return
    with FakeVLLM(tiny_model) as srv:
        here = Here({"top_logprobs": 3, "base_url": srv.url}, [srv.engine], [])
        connect = vllm_server.connect

        def counted(model: str, *args, **kwargs) -> vllm_server.ServerEngine:
            here.loads.append(model)
            return connect(model, *args, **kwargs)

        monkeypatch.setattr(vllm_server, "connect", counted)
        yield here


def test_selectit_ratings_on_vllm_equal_transformers_and_are_cached_apart(
        vllm_here, tiny_model: str, records: pd.DataFrame, tmp_path) -> None:
    from selectune.selectit.config import SelectITConfig
    from selectune.selectit.rater import rate, rating_cache, rating_prompts

    hf = SelectITConfig(models=[tiny_model], dtype="float32")
    on_vllm = SelectITConfig(models=[tiny_model], dtype="float32", backend="vllm", vllm=vllm_here.opts)
    prompts = rating_prompts(hf)
    cache = rating_cache(tmp_path / "ratings.sqlite")
    ref = rate(records, tiny_model, hf, prompts, cache, progress=False)
    got = rate(records, tiny_model, on_vllm, prompts, cache, progress=False)
    assert got.cache_hits == 0 and got.computed == len(records) * len(prompts)  # never the transformers entries
    np.testing.assert_allclose(got.probs, ref.probs, atol=1e-5, rtol=0)
    assert (got.truncated == ref.truncated).all()
    assert got.engine["fallback_queries"] > 0  # some rating tokens were outside the top 3: queried exactly
    assert all(p == vllm.rating_params(3) or p == vllm.PROMPT_LOGPROB_PARAMS for _, p in vllm_here.requests)
    again = rate(records, tiny_model, on_vllm, prompts, cache, progress=False)
    assert again.cache_hits == got.computed and again.computed == 0 and len(vllm_here.loads) == 1  # none loaded
    np.testing.assert_array_equal(again.probs, got.probs)


def test_ifd_on_vllm_equals_transformers(vllm_here, tiny_model: str, records: pd.DataFrame) -> None:
    from selectune.reflection.config import IFDConfig
    from selectune.reflection.ifd import ifd_scores

    ref = ifd_scores(records, IFDConfig(model=tiny_model, dtype="float32"), progress=False)
    got = ifd_scores(records, IFDConfig(model=tiny_model, dtype="float32", backend="vllm",
                                             vllm=vllm_here.opts), progress=False)
    pd.testing.assert_frame_equal(got, ref, atol=1e-5, rtol=0)
    assert all(p == vllm.PROMPT_LOGPROB_PARAMS for _, p in vllm_here.requests)


def test_teacher_on_vllm_writes_the_transformers_replies(vllm_here, tiny_model: str, tmp_path) -> None:
    from selectune.reflection.config import TeacherConfig
    from selectune.reflection.prompts import INSTRUCTION_PARTS
    from selectune.reflection.teachers.base import make_teacher

    reqs = [[{"role": "user", "content": "Rewrite: add two and three."}], [{"role": "user", "content": "What?"}]]
    kw = {"model": tiny_model, "dtype": "float32", "max_new_tokens": 12, "repetition_penalty": 1.0}
    hf = make_teacher(TeacherConfig(**kw), None).complete(reqs, progress=False, steps=[INSTRUCTION_PARTS] * 2)
    teacher = make_teacher(TeacherConfig(**kw, backend="vllm", vllm=vllm_here.opts), tmp_path / "t.sqlite")
    got = teacher.complete(reqs, progress=False, steps=[INSTRUCTION_PARTS] * 2)
    assert teacher.id.startswith("vllm:") and [c.text for c in got] == [c.text for c in hf]
    assert [c.completion_tokens for c in got] == [c.completion_tokens for c in hf]
    assert [c.finish_reason for c in got] == [c.finish_reason for c in hf]
    assert any(p.get("stop") == ["[End]", "[New Answer]"] for _, p in vllm_here.requests)  # the prefill steps
    again = make_teacher(TeacherConfig(**kw, backend="vllm", vllm=vllm_here.opts), tmp_path / "t.sqlite").complete(
        reqs, progress=False, steps=[INSTRUCTION_PARTS] * 2)
    assert all(c.cached for c in again) and len(vllm_here.loads) == 1


def test_judge_samples_on_vllm_equal_transformers(vllm_here, tiny_model: str, records: pd.DataFrame) -> None:
    from selectune.judge.config import JudgeConfig
    from selectune.judge.labels import label_records, sample_for_labels
    from selectune.tracking.registry import load_model, load_vllm_model

    cfg = JudgeConfig(backend="vllm", n_samples=2, max_new_tokens=8, dtype="float32", vllm=vllm_here.opts)
    recs = label_records(records.head(3))
    ref = sample_for_labels(recs, cfg, load_model(tiny_model, dtype="float32", device="cpu"))
    got = sample_for_labels(recs, cfg, load_vllm_model(tiny_model, cfg.vllm, cfg.dtype))
    pd.testing.assert_frame_equal(got, ref)
    seeds = [p["seed"] for _, p in vllm_here.requests]
    assert len(set(seeds)) == len(seeds) == 6  # one seed per (record, sample)


def test_evaluation_answers_on_vllm_equal_transformers_and_are_cached_apart(
        vllm_here, tiny_model: str, records: pd.DataFrame, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from selectune.evaluation.config import EvalConfig
    from selectune.evaluation.measure import greedy_answers
    from selectune.tracking.registry import load_model, load_vllm_model

    monkeypatch.setenv("SELECTUNE_HOME", str(tmp_path))  # an answer cache of its own (engine and server share keys)
    cfg = EvalConfig(backend="vllm", max_new_tokens=8, vllm=vllm_here.opts)
    items = records.head(3)
    ref = greedy_answers(load_model(tiny_model, dtype="float32", device="cpu"), "tiny", items, cfg)
    got = greedy_answers(load_vllm_model(tiny_model, cfg.vllm, "float32"), "tiny", items, cfg)
    assert got == ref and len(vllm_here.requests) == 3  # not served from the transformers answers' cache
    assert all(p["temperature"] == 0.0 and p["max_tokens"] == 8 for _, p in vllm_here.requests)


# ---- real vLLM on a GPU ----

gpu = pytest.mark.skipif(not (HAS_VLLM and _cuda()), reason="needs vllm and a CUDA GPU")


@pytest.mark.gpu
@gpu
def test_selectit_and_ifd_on_real_vllm_match_transformers() -> None:
    from selectune.data.records import load_records
    from selectune.reflection.config import IFDConfig
    from selectune.reflection.ifd import ifd_scores
    from selectune.selectit.config import SelectITConfig
    from selectune.selectit.rater import rate, rating_prompts
    from tests.fixtures import DEMO

    demo = load_records(DEMO).records.head(8).reset_index(drop=True)
    opts = {"gpu_memory_utilization": 0.3, "max_num_seqs": 64}
    hf = SelectITConfig(models=["gemma-3-270m"], dtype="bfloat16")
    on_vllm = SelectITConfig(models=["gemma-3-270m"], dtype="bfloat16", backend="vllm", vllm=opts)
    prompts = rating_prompts(hf)
    ref, got = (rate(demo, "gemma-3-270m", c, prompts, None, progress=False) for c in (hf, on_vllm))
    np.testing.assert_allclose(got.probs, ref.probs, atol=2e-2, rtol=0)
    assert (got.truncated == ref.truncated).all() and got.engine["dtype"] == "bfloat16"
    ifd_ref = ifd_scores(demo, IFDConfig(model="gemma-3-270m", dtype="bfloat16"), progress=False)
    ifd_got = ifd_scores(demo, IFDConfig(model="gemma-3-270m", dtype="bfloat16", backend="vllm", vllm=opts),
                         progress=False)
    cols = ["loss_a", "loss_a_given_q", "loss_q", "loss_q_given_a"]
    np.testing.assert_allclose(ifd_got[cols], ifd_ref[cols], atol=5e-2, rtol=0)
