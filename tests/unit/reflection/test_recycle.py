"""The recycling stage end to end: a local tiny teacher, a scripted OpenAI-compatible server, budget stops,
MLflow logging and the CLI commands."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from selectune.config import IFDConfig, ReflectionConfig
from selectune.data.records import record_id
from selectune.reflection.gate import VARIANTS, gate
from selectune.reflection.prompts import response_messages
from tests.fixtures import OPENAI_SERVER
from tests.fixtures.openai_server import FakeOpenAI
from tests.fixtures.scripted_teacher import CODE, Q0, Q0S, Q2S, Q3, Q3S, SCRIPT, scripted


def extract(reply: str, marker: str) -> str:
    return reply.split(marker, 1)[1].split("[End]", 1)[0].strip(" *\n#")


def expected_variants(records: pd.DataFrame) -> dict[int, dict[str, tuple[str, str, str]]]:
    """What the script should produce for the first five records, written out by hand."""
    r = [tuple(x) for x in records[["instruction", "input", "output"]].itertuples(index=False)]
    a0 = extract(SCRIPT[Q0]["instruction"], "[New Answer]**")
    return {
        0: {"ori": r[0], "q": (Q0S, "", a0), "a": (Q0, "", "Paris is the capital and largest city of France."),
            "qa": (Q0S, "", "The Capetian kings made Paris their seat, and it stayed the capital.")},
        1: {"ori": r[1], "a": (r[1][0], "", "2 + 3 = 5: start at two and count three more.")},
        2: {"ori": r[2], "q": (Q2S, "", "Bonsoir, les amis.")},
        3: {"ori": r[3], "q": (Q3S, "", CODE), "a": (Q3, "", "```python\ndef total(xs):\n    return sum(xs)\n```\n"
                                                             "It adds them."),
            "qa": (Q3S, "", "def sq(xs): return sum(x * x for x in xs)")},
        4: {"ori": r[4]},
    }


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, records: pd.DataFrame) -> Path:
    """A fresh SELECTUNE_HOME (own teacher cache), an API key, and the records as Parquet."""
    monkeypatch.setenv("SELECTUNE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-secret")
    records.assign(category=["geo", "math", "lang", "code", "list", "code"]).to_parquet(tmp_path / "records.parquet")
    return tmp_path / "records.parquet"


def openai_cfg(url: str, student: str, **teacher: object) -> ReflectionConfig:
    return ReflectionConfig.model_validate({
        "limit": 5, "student": {"model": student, "dtype": "float32"},
        "teacher": {"backend": "openai", "model": "m", "base_url": url, "temperature": 0, "max_retries": 0,
                    "concurrency": 4, **teacher}})


def test_recycle_stage_scripted_server(env: Path, tiny_model: str, records: pd.DataFrame, mlflow_store: str) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    from selectune.reflection.ifd import ifd_scores
    from selectune.reflection.stage import recycle_stage
    from selectune.tracking import runs

    failing = [response_messages(*records.iloc[i][["instruction", "input", "output"]])[1]["content"] for i in (2, 4)]
    with FakeOpenAI({"faults": [{"kind": "500", "match": p} for p in failing]}, reply=scripted) as srv:
        cfg = openai_cfg(srv.url, tiny_model)
        runs.setup("recycle-test")
        with mlflow.start_run() as parent:
            res = recycle_stage(cfg, str(env), env.parent / "run", parent.info.run_id)
        again = recycle_stage(cfg, str(env), env.parent / "run")
        fresh = recycle_stage(cfg, str(env), env.parent / "run2")  # same teacher cache, new stage folder
    assert again.skipped and not res.skipped
    out = pd.read_parquet(res.outputs.recycled)
    assert out["source_id"].tolist() == records["id"].tolist()  # nothing lost, order kept
    assert out["category"].tolist() == ["geo", "math", "lang", "code", "list", "code"]
    assert out["label"].tolist() == records["label"].tolist()

    # the student numbers, computed one record at a time, and the decisions they imply
    student = IFDConfig(model=tiny_model, dtype="float32")
    for i, variants in expected_variants(records).items():
        frame = pd.DataFrame(list(variants.values()), columns=["instruction", "input", "output"])
        stats = ifd_scores(frame, student, progress=False)
        mine = {v: (stats["ifd"].iloc[k], stats["rifd"].iloc[k]) for k, v in enumerate(variants)}
        row = out.iloc[i]
        for v in VARIANTS:
            got = (row[f"ifd.{v}"], row[f"rifd.{v}"])
            if v in mine:
                assert got == pytest.approx(mine[v], rel=1e-4), (i, v)
            else:
                assert math.isnan(got[0]) and math.isnan(got[1]), (i, v)
        d = gate(mine, cfg)
        assert (row["variant"], row["decision"]) == (d.variant, "kept" if d.kept else "dropped"), (i, row["reason"])
        assert (row["instruction"], row["input"], row["output"]) == variants[d.variant]
        assert row["id"] == record_id(*variants[d.variant])
    # the fixture student's numbers give a reflected and an original choice, kept and dropped rows
    assert "q" in out["variant"].tolist() and {"kept", "dropped"} <= set(out["decision"][:5])
    assert "q unavailable (instruction reflection: no [New Instruction] marker)" in out["reason"][1]
    assert out["reason"][4].startswith("q unavailable (instruction reflection: empty answer): original instruction "
                                       "kept; a unavailable (response reflection: teacher error: HTTP 500")
    last = out.iloc[5]
    assert (last["variant"], last["decision"], last["reason"], last["id"]) == ("ori", "kept", "not recycled (limit)",
                                                                               records["id"][5])

    lines = [json.loads(x) for x in Path(res.outputs.reflections).read_text().splitlines()]
    assert [(e["kind"], e["ok"]) for e in lines if e["source_id"] == records["id"][0]] == [
        ("instruction", True), ("response_ori", True), ("response_q", True)]
    assert sorted(e["parse"] or e["error"][:8] for e in lines if not e["ok"]) == [
        "HTTP 500", "HTTP 500", "empty answer", "no [Better Answer] marker", "no [New Instruction] marker"]
    assert lines[0]["text"] == SCRIPT[Q0]["instruction"]
    m = res.metrics
    assert len(lines) == m["teacher.calls"] == 13 and m["teacher.failed"] == 2 and m["teacher.cached"] == 0
    assert (m["records_in"], m["records_recycled"], m["passthrough.limit"], m["passthrough.budget"]) == (6, 5, 1, 0)
    assert m["records_out"] == (out["decision"] == "kept").sum()
    assert sum(m[f"branch.{v}.{d}"] for v in VARIANTS for d in ("kept", "dropped")) == 5
    assert m["parse_fail_rate.instruction"] == 0.4 and m["parse_fail_rate.response"] == round(1 / 6, 4)
    assert m["teacher.tokens"] == m["teacher.prompt_tokens"] + m["teacher.completion_tokens"] > 0
    kept = pd.read_parquet(res.outputs.kept)
    assert kept["id"].tolist() == out.loc[out["decision"] == "kept", "id"].tolist()
    assert (fresh.metrics["teacher.calls"], fresh.metrics["teacher.cached"]) == (2, 11)  # errors are not cached

    client = MlflowClient()
    run = client.get_run(res.mlflow_run_id)
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert run.data.metrics["teacher.calls"] == 13 and run.data.metrics["records_in"] == 6
    assert run.data.metrics["branch.ori.kept"] == m["branch.ori.kept"]
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["recycled"]
    assert {"recycle_ifd_hist.png", "recycle_rifd_hist.png"} <= {a.path for a in client.list_artifacts(run.info.run_id)}

    # the prompts: text, digest, one registry version however many runs use them
    from selectune.reflection.prompts import builtin_file
    from selectune.tracking.prompts import digest

    text = Path(builtin_file("instruction")).read_text(encoding="utf-8")
    assert mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/prompts/reflect-instruction.txt") == text
    assert run.data.tags["selectune.prompt.reflect-instruction"] == digest(text)
    assert run.data.tags["selectune.prompt.reflect-instruction.uri"] == "prompts:/selectune-reflect-instruction/1"
    assert mlflow.genai.load_prompt("prompts:/selectune-reflect-instruction@latest").template == text
    fresh_run = client.get_run(fresh.mlflow_run_id) if fresh.mlflow_run_id else None
    assert fresh_run is None  # run without a parent: nothing logged

    # one span per new teacher call, linked to the stage run, with what was asked and answered; no key anywhere
    traces = mlflow.search_traces(run_id=run.info.run_id, return_type="list", max_results=100)
    assert len(traces) == 13
    spans = [t.data.spans[0] for t in traces]
    assert {sp.attributes["kind"] for sp in spans} == {"instruction", "response_ori", "response_q"}
    failed = [sp for sp in spans if sp.attributes.get("error")]
    assert len(failed) == 2 and all(sp.attributes["error"].startswith("HTTP 500") for sp in failed)
    first = next(sp for sp in spans if sp.attributes["kind"] == "instruction"
                 and sp.attributes["source_id"] == records["id"][0])
    assert first.outputs == {"text": SCRIPT[Q0]["instruction"]} and first.attributes["parse_ok"] is True
    assert first.attributes["backend"] == "openai" and first.attributes["latency_s"] >= 0
    assert all("sk-test-not-a-secret" not in json.dumps(t.to_dict()) for t in traces)


def test_budget_stop_keeps_unreached_records(env: Path, tiny_model: str, records: pd.DataFrame,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from selectune.reflection import recycle as rc

    def always(prompt: str) -> str:  # every reply parses, and every record gets its own reflected instruction
        q = prompt.split("[Instruction]\n", 1)[1].split("\n\n[", 1)[0]
        if "[New Instruction] <the new instruction> [End]" in prompt:
            return f"[New Instruction] Say more about: {q} [End] [New Answer] More. [End]"
        return f"[Better Answer] A better answer to: {q} [End]"

    monkeypatch.setattr(rc, "CHUNK", 2)
    with FakeOpenAI(reply=always) as srv:
        cfg = openai_cfg(srv.url, tiny_model, max_calls=6).model_copy(update={"limit": None})
        res = rc.recycle(pd.read_parquet(env), cfg, progress=False)
    out, m = res.recycled, res.metrics
    assert len(out) == 6 and out["source_id"].tolist() == records["id"].tolist()
    # first chunk: 2 records x (2 + 1) calls = the whole budget; the next chunk is refused, then the loop stops
    assert (m["teacher.calls"], m["teacher.skipped"], m["passthrough.budget"], m["records_recycled"]) == (6, 4, 4, 2)
    rest = out.iloc[2:]
    assert (rest["reason"] == "teacher budget exhausted").all() and (rest["variant"] == "ori").all()
    assert (rest["decision"] == "kept").all() and rest["id"].tolist() == records["id"][2:].tolist()
    assert rest["instruction"].tolist() == records["instruction"][2:].tolist()
    assert out.iloc[:2]["ifd.qa"].notna().all() and rest["ifd.ori"].isna().all()
    assert [e["error"][:7] for e in res.reflections if e["error"]] == ["budget:"] * 4


def test_local_hf_teacher(env: Path, tiny_model: str, records: pd.DataFrame) -> None:
    """A random tiny model, prefilled with the opening markers, never reaches a closing one within 4 tokens: every
    reflection is truncated (never a rewrite) and the originals are gated."""
    from selectune.reflection.ifd import ifd_scores
    from selectune.reflection.recycle import recycle

    cfg = ReflectionConfig.model_validate({
        "limit": 3, "student": {"model": tiny_model, "dtype": "float32"},
        "teacher": {"model": tiny_model, "temperature": 0, "max_new_tokens": 4, "dtype": "float32"}})
    res = recycle(pd.read_parquet(env), cfg, progress=False)
    out = res.recycled
    cut = "truncated: the reply hit the token limit"
    assert [(e["kind"], e["ok"], e["parse"], e["finish_reason"]) for e in res.reflections[:2]] == [
        ("instruction", False, cut, "length"), ("response_ori", False, cut, "length")]
    assert res.reflections[0]["text"].startswith("[New Instruction] ")  # the prefill is kept in the raw reply
    assert res.reflections[1]["text"].startswith("[Better Answer] ")
    assert len(res.reflections) == 6 and all(e["completion_tokens"] <= 4 for e in res.reflections)
    assert (out["variant"] == "ori").all() and out["id"].tolist() == records["id"].tolist()
    assert out["reason"][:3].str.startswith(f"q unavailable (instruction reflection: {cut})").all()
    direct = ifd_scores(records.head(3), cfg.student, progress=False)
    assert out["ifd.ori"][:3].tolist() == pytest.approx(direct["ifd"].tolist(), rel=1e-4)
    assert out["rifd.ori"][:3].tolist() == pytest.approx(direct["rifd"].tolist(), rel=1e-4)
    assert out[["ifd.q", "ifd.a", "ifd.qa"]].isna().all().all()
    assert res.metrics["parse_fail_rate.instruction"] == res.metrics["parse_fail_rate.response"] == 1.0
    assert res.metrics["teacher.calls"] == 6


def _cli():
    import typer

    from selectune.cli.reflect import reflect_cmd
    from selectune.cli.score import score_ifd_cmd

    app = typer.Typer()
    app.command("reflect")(reflect_cmd)
    app.command("ifd")(score_ifd_cmd)
    return app


def test_cli_reflect_and_score_ifd(env: Path, tiny_model: str, records: pd.DataFrame) -> None:
    from selectune.reflection.ifd import ifd_scores

    data = env.parent / "in.json"
    data.write_text(records[["instruction", "input", "output"]].head(3).to_json(orient="records"))
    runner, app = CliRunner(), _cli()
    base = ["reflect", "-i", str(data), "--student", tiny_model, "--teacher", "openai:m"]
    r = runner.invoke(app, [*base, "-o", "x.parquet"])
    assert r.exit_code == 2 and "needs --base-url" in r.output
    r = runner.invoke(app, [*base, "--base-url", "http://127.0.0.1:9/v1", "--dry-run", "--prices", "1,2",
                            "--max-new-tokens", "10", "-o", "x.parquet"])
    assert r.exit_code == 0, r.output
    est = json.loads(r.output)
    assert (est["records"], est["requests"], est["calls"], est["max_completion_tokens"]) == (3, 9, 9, 90)
    assert est["cost"] == pytest.approx((est["prompt_tokens"] * 1 + 90 * 2) / 1e6)
    with FakeOpenAI(reply=scripted) as srv:
        r = runner.invoke(app, [*base, "--base-url", srv.url, "--temperature", "0", "--dtype", "float32",
                                "-o", str(env.parent / "out" / "rec.parquet")])
    assert r.exit_code == 0, r.output
    assert "recycled 3 of 3 records" in r.output and "teacher: 8 calls" in r.output
    assert len(pd.read_parquet(env.parent / "out" / "rec.parquet")) == 3
    assert len((env.parent / "out" / "rec.reflections.jsonl").read_text().splitlines()) == 8
    r = runner.invoke(app, ["reflect", "-i", str(env.parent / "missing.json"), "-o", "x.parquet"])
    assert r.exit_code == 2 and "no such file" in r.output

    r = runner.invoke(app, ["ifd", "-i", str(data), "-m", tiny_model, "--dtype", "float32",
                            "-o", str(env.parent / "ifd.parquet")])
    assert r.exit_code == 0, r.output
    table = pd.read_parquet(env.parent / "ifd.parquet")
    direct = ifd_scores(records.head(3), IFDConfig(model=tiny_model, dtype="float32"), progress=False)
    assert table["ifd"].tolist() == pytest.approx(direct["ifd"].tolist(), rel=1e-5)
    assert table["id"].tolist() == records["id"][:3].tolist()


def test_empty_input_and_bad_records(env: Path) -> None:
    from selectune.reflection.recycle import recycle

    df = pd.read_parquet(env)
    res = recycle(df.head(0), ReflectionConfig(), progress=False)  # no teacher, no student loaded
    assert len(res.recycled) == 0 and {"source_id", "variant", "decision", "ifd.qa"} <= set(res.recycled.columns)
    assert res.metrics["records_in"] == res.metrics["records_out"] == 0
    with pytest.raises(ValueError, match="duplicate record ids"):
        recycle(pd.concat([df, df.head(1)]), ReflectionConfig(), progress=False)
    with pytest.raises(ValueError, match="no 'output' column"):
        recycle(df.drop(columns="output"), ReflectionConfig(), progress=False)


def test_cli_reflect_against_standalone_reflector_server(env: Path, tiny_model: str, records: pd.DataFrame) -> None:
    """The documented demo procedure: ``tests/fixtures/openai_server.py`` in reflector mode as its own process (a
    429 with Retry-After on every prompt's first call), the installed ``selectune reflect`` command as another."""
    import subprocess
    import sys
    import urllib.request

    script = env.parent / "script.json"
    script.write_text(json.dumps({"reflector": True, "faults": [{"kind": "429", "calls": [1], "retry_after": 0}]}))
    data = env.parent / "in.json"
    data.write_text(records[["instruction", "input", "output"]].to_json(orient="records"))
    server = subprocess.Popen([sys.executable, str(OPENAI_SERVER), "--port", "0", "--script",
                               str(script)], stdout=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{int(server.stdout.readline().split()[1])}"
        cli = Path(sys.executable).with_name("selectune")
        out = env.parent / "demo" / "recycled.parquet"
        run = subprocess.run([str(cli), "reflect", "-i", str(data), "-o", str(out), "--teacher", "openai:m",
                              "--base-url", f"{url}/v1", "--student", tiny_model, "--dtype", "float32",
                              "--temperature", "0"], capture_output=True, text=True, timeout=300)
        stats = json.loads(urllib.request.urlopen(f"{url}/stats").read())
    finally:
        server.kill()
        server.wait()
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [json.loads(x) for x in out.with_suffix(".reflections.jsonl").read_text().splitlines()]
    assert stats["total"] == 2 * len(lines) and set(stats["served"].values()) == {1}  # one 429 then served
    by_id = records.set_index("id")
    for e in lines:  # the reflector keeps the original answer in both reflections, so it prefixes every answer
        instruction, output = by_id.loc[e["source_id"], ["instruction", "output"]]
        if e["kind"] == "instruction":
            assert e["ok"] == (len(instruction) % 3 != 0), (instruction, e["parse"])
            assert not e["ok"] or e["instruction"].endswith("Explain your reasoning step by step.")
        else:
            assert e["ok"] and e["answer"].startswith(output.strip()), e
    n_fail = sum(len(i) % 3 == 0 for i in records["instruction"])
    assert f"parse failures: instruction {100 * n_fail / len(records):.1f}%, response 0.0%" in run.stdout
    recycled = pd.read_parquet(out)
    assert recycled["source_id"].tolist() == records["id"].tolist()


def test_replies_cut_off_by_the_token_limit_never_become_rewrites(env: Path, tiny_model: str,
                                                                  records: pd.DataFrame) -> None:
    """finish_reason "length" from the endpoint makes a reply truncated even when its markers parse."""
    from selectune.reflection.prompts import instruction_messages
    from selectune.reflection.recycle import recycle

    cut = instruction_messages(*records.iloc[0][["instruction", "input", "output"]])[1]["content"]
    with FakeOpenAI({"faults": [{"kind": "length", "match": cut}]}, reply=scripted) as srv:
        res = recycle(pd.read_parquet(env), openai_cfg(srv.url, tiny_model), progress=False)
    entry = next(e for e in res.reflections if e["kind"] == "instruction" and e["source_id"] == records["id"][0])
    assert (entry["ok"], entry["finish_reason"]) == (False, "length")
    assert entry["parse"] == "truncated: the reply hit the token limit"
    assert res.recycled.loc[0, "variant"] in ("ori", "a")  # the cut instruction rewrite is not a candidate
    assert "q unavailable (instruction reflection: truncated" in res.recycled.loc[0, "reason"]
    others = [e for e in res.reflections if e["source_id"] != records["id"][0] and not e["error"]]
    assert others and all(e["finish_reason"] == "stop" for e in others)


@pytest.mark.parametrize("retries", [0, 1])
def test_an_unusable_reply_is_asked_again_once(env: Path, tiny_model: str, records: pd.DataFrame,
                                               retries: int) -> None:
    from selectune.reflection.prompts import instruction_messages
    from selectune.reflection.recycle import recycle

    prompt = instruction_messages(*records.iloc[0][["instruction", "input", "output"]])[1]["content"]
    with FakeOpenAI({"faults": [{"kind": "plain", "match": prompt, "calls": [1]}]}, reply=scripted) as srv:
        cfg = openai_cfg(srv.url, tiny_model).model_copy(update={"parse_retries": retries})
        res = recycle(pd.read_parquet(env), cfg, progress=False)
        again = recycle(pd.read_parquet(env), cfg, progress=False)  # the retry's reply is cached too
        calls = srv.stats()["received"][prompt]
    entry = next(e for e in res.reflections if e["kind"] == "instruction" and e["source_id"] == records["id"][0])
    assert (entry["ok"], entry["attempts"], calls) == ((True, 2, 2) if retries else (False, 1, 1))
    assert again.metrics["teacher.calls"] == 0 and again.recycled.equals(res.recycled)


def test_official_mode_keeps_only_qa_and_a_pairs_and_decodes_greedily(env: Path, tiny_model: str,
                                                                      records: pd.DataFrame) -> None:
    from selectune.reflection.recycle import recycle

    with FakeOpenAI({}, reply=scripted) as srv:
        ours = recycle(pd.read_parquet(env), openai_cfg(srv.url, tiny_model), progress=False)
        cfg = ReflectionConfig.model_validate({**openai_cfg(srv.url, tiny_model).model_dump(exclude_unset=True),
                                               "fidelity": "official"})
        theirs = recycle(pd.read_parquet(env), cfg, progress=False)
        body = srv.bodies[-1]
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0, 1.0, 2048)
    assert (cfg.student.template, cfg.student.max_tokens, cfg.parse_retries) == ("vicuna", 2048, 1)
    gated = theirs.recycled[theirs.recycled["reason"] != "not recycled (limit)"]  # the sixth record: passed through
    assert len(gated) == 5 and set(gated.loc[gated["decision"] == "kept", "variant"]) <= {"qa", "a"}
    for _, row in gated.iterrows():
        stats = {v: (row[f"ifd.{v}"], row[f"rifd.{v}"]) for v in VARIANTS if not math.isnan(row[f"ifd.{v}"])}
        assert (row["decision"] == "kept") == (gate(stats, cfg).kept and row["variant"] in ("qa", "a"))
    ours_gated = ours.recycled[ours.recycled["reason"] != "not recycled (limit)"]
    assert set(ours_gated.loc[ours_gated["decision"] == "kept", "variant"]) - {"qa", "a"}  # ours keeps more


def test_hf_prefill_writes_each_opening_marker_and_stops_at_a_closing_one(tiny_model: str,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The part-by-part reply of the local teacher, with a scripted generate in place of the model's."""
    from selectune.core import generate as gen
    from selectune.reflection.config import TeacherConfig
    from selectune.reflection.prompts import INSTRUCTION_PARTS, RESPONSE_PARTS
    from selectune.reflection.teachers.base import make_teacher

    calls: list[tuple[str, tuple[str, ...]]] = []
    script = {"[New Instruction] ": ("Explain why the sky is blue. [End]", 9, "stop"),
              "[New Answer] ": ("Rayleigh scattering.", 5, "stop"),  # ends the turn: closed with [End]
              "[Better Answer] ": ("Paris, on the Seine", 7, "length")}

    def fake_generate(model, tok, prompts, max_new_tokens, temperature, top_p, seeds, stop_strings,  # noqa: ANN001
                      repetition_penalty):
        assert repetition_penalty == 1.2  # a model under 1B parameters
        out = []
        for ids in prompts:
            text = tok.decode(ids)
            calls.append((text[-20:], tuple(stop_strings)))
            out.append(gen.Generated(*next(v for k, v in script.items() if text.endswith(k))))
        return out

    monkeypatch.setattr(gen, "generate_batch", fake_generate)
    teacher = make_teacher(TeacherConfig(model=tiny_model, dtype="float32", temperature=0), None)
    ins, resp = teacher.complete([[{"role": "user", "content": "q"}], [{"role": "user", "content": "a"}]],
                                 progress=False, steps=[INSTRUCTION_PARTS, RESPONSE_PARTS])
    assert ins.text == "[New Instruction] Explain why the sky is blue. [End]\n[New Answer] Rayleigh scattering. [End]"
    assert (ins.completion_tokens, ins.finish_reason) == (14, "stop")
    assert (resp.text, resp.finish_reason) == ("[Better Answer] Paris, on the Seine", "length")
    assert sorted(stops for _, stops in calls) == [("[End]",), ("[End]",), ("[End]", "[New Answer]")]
