"""Exact invalidation, end to end: one run directory, every stage of the flow on (tiny models, a local teacher
server), and one thing changed at a time (a config field, the input data, a model's weights rewritten at the same
path, a prompt file, a deleted output). Each step asserts exactly which stages ran again; the others are skipped by
their manifests. A stage that runs again but writes the same bytes does not re-run the stages after it. At the end,
nothing any of the runs wrote is a pickle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

STAGES = ("load", "evalset", "recycle", "selectit", "ifd", "select", "tune", "evaluate", "judge")
SCORES = {"selectit", "ifd", "select"}


def _dataset(n: int) -> list[dict[str, str]]:
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    return [{"instruction": f"Explain {words[i % 10]} number {i}.", "input": f"context {i}" if i % 3 == 0 else "",
             "output": " ".join(words[(i + j) % 10] for j in range(6 + i % 5)) + "."} for i in range(n)]


def _write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


REFLECT_INSTRUCTION = """{% macro system() %}You improve instructions.{% endmacro %}
{% macro user(instruction, input, answer) %}[Instruction]
{{ instruction }}

[Input]
{{ input }}

[Answer]
{{ answer }}
[End of Answer]

Reply as [New Instruction] <the new instruction> [End] then [New Answer] <the new answer> [End].{% endmacro %}
"""
REFLECT_RESPONSE = """{% macro system() %}You improve answers.{% endmacro %}
{% macro user(instruction, input, answer) %}[Instruction]
{{ instruction }}

[Answer]
{{ answer }}
[End of Answer]

Reply as [Better Answer] <the better answer> [End].{% endmacro %}
"""
JUDGE_FREE = "{% macro prompt(question, answer) %}Rate 0-9.\n{{ question }}\n{{ answer }}{% endmacro %}"
JUDGE_REF = ("{% macro prompt(question, answer, reference) %}Rate 0-9 against the reference.\n{{ question }}\n"
             "{{ reference }}\n{{ answer }}{% endmacro %}")


def _rewrite_weights(folder: Path) -> None:
    """The model's weights rewritten in place (same path, same size): only the content changes."""
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    tensors = {k: v * 1.5 if "mlp" in k else v for k, v in tensors.items()}
    save_file(tensors, str(path), metadata={"format": "pt"})


def test_each_change_reruns_exactly_the_stages_that_depend_on_it(prefect_server, mlflow_store, tmp_path,
                                                                  tiny_model, tiny_embedder, monkeypatch) -> None:
    from flows.curate import run_pipeline
    from selectune.config import PipelineConfig
    from tests.fixtures.openai_server import FakeOpenAI

    monkeypatch.setenv("SELECTUNE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-secret")
    rater = tmp_path / "rater"  # its own copy: its weights are rewritten below
    shutil.copytree(tiny_model, rater)
    data = tmp_path / "data.json"
    records = _dataset(12)
    data.write_text(json.dumps(records))
    files = {"rating": _write(tmp_path / "rating.txt", "Rate the answer from 1 to 5.\nHow good is it, 1 to 5?\n"),
             "instruction": _write(tmp_path / "instruction.j2", REFLECT_INSTRUCTION),
             "response": _write(tmp_path / "response.j2", REFLECT_RESPONSE),
             "judge_ref": _write(tmp_path / "judge_ref.j2", JUDGE_REF),
             "judge_free": _write(tmp_path / "judge_free.j2", JUDGE_FREE)}
    tiny = {"dtype": "float32"}
    train = {"base": tiny_model, "max_steps": 2, "batch_size": 2, "grad_accum": 1, "max_tokens": 256,
             "register_as": None, **tiny}

    with FakeOpenAI({"reflector": True}) as srv:
        recipe = {
            "run_dir": str(tmp_path / "run"), "experiment": "invalidation",
            "data": {"input": str(data)},
            "eval": {"fraction": 0.2, "max_records": 3, "max_new_tokens": 4, "bootstrap_resamples": 200},
            "reflection": {"enabled": True, "limit": 4, "prompts": {"reflect_instruction": files["instruction"],
                                                                    "reflect_response": files["response"]},
                           "student": {"model": tiny_model, **tiny},
                           "teacher": {"backend": "openai", "model": "m", "base_url": srv.url, "max_retries": 0}},
            "selectit": {"models": [str(rater)], "rating_prompts_file": files["rating"], **tiny},
            "ifd": {"enabled": True, "model": tiny_model, **tiny},
            "selection": {"fraction": 0.5},
            "tune": {**train, "max_new_tokens": 4},
            "promote": {"enabled": False},
            "judge": {"enabled": True, **train, "embedder": tiny_embedder, "n_samples": 1, "max_new_tokens": 4,
                      "prompts": {"with_reference": files["judge_ref"], "without_reference": files["judge_free"]}},
        }

        def subset() -> list[str]:
            import pandas as pd

            return list(pd.read_parquet(tmp_path / "run" / "select" / "selected.parquet")["id"])

        def adapter() -> str:
            from selectune.core.digests import file_digest

            return file_digest(tmp_path / "run" / "tune" / "adapter")

        def check(upstream: set[str], **changes: object) -> None:
            """``upstream`` re-runs, then tuning and the judge exactly when the selected records (or their order)
            changed, and the evaluation exactly when the tuned adapter's bytes changed."""
            ids, tuned = subset(), adapter()
            ran = run(**changes)
            expected = upstream | ({"tune", "judge"} if subset() != ids else set()) | (
                {"evaluate"} if adapter() != tuned else set())
            assert ran == expected, (changes, ids, subset())

        def run(**changes: object) -> set[str]:
            """Run the flow with ``changes`` (dotted paths) applied to the recipe; the stages that ran."""
            for path, value in changes.items():
                node = recipe
                *parents, last = path.split(".")
                for part in parents:
                    node = node[part]
                node[last] = value
            summary = run_pipeline(PipelineConfig.model_validate(json.loads(json.dumps(recipe))))
            skipped = set(filter(None, summary["skipped_stages"].split(",")))
            ran = set(STAGES) - skipped
            assert {p.parent.name for p in (tmp_path / "run").glob("*/manifest.json")} >= set(STAGES)
            return ran

        assert run() == set(STAGES)
        assert run() == set(), "nothing changed: every stage is skipped"
        # runtime fields: how fast, not what
        assert run(**{"selectit.batch_size": 3, "reflection.teacher.concurrency": 2, "judge.score_batch_size": 3,
                      "tune.save_steps": 1}) == set()
        assert run(**{"eval.bootstrap_resamples": 300}) == {"evaluate"}
        assert run(**{"tune.learning_rate": 1e-3}) == {"tune", "evaluate", "judge"}
        check({"select"}, **{"selection.fraction": 0.25})
        # new IFD columns, the same subset: tuning and the judge read only ids, texts and labels
        assert run(**{"ifd.template": "vicuna"}) == {"ifd", "select"}
        _write(Path(files["rating"]), "Rate the answer from 1 to 5.\nIs it correct? 1 to 5.\n")
        check(SCORES)  # a changed rating prompt file re-scores
        _rewrite_weights(rater)
        check(SCORES)  # so do the rater's weights rewritten at the same path
        _write(Path(files["judge_free"]), JUDGE_FREE.replace("Rate 0-9.", "Rate from 0 to 9."))
        assert run() == {"judge"}
        calls = srv.total
        _write(Path(files["response"]), REFLECT_RESPONSE.replace("You improve answers.", "You improve replies."))
        # new teacher calls (the prompt is in every request's key); the teacher writes the same rewrites, so the
        # recycled records are byte-identical and nothing after recycling runs again
        assert run() == {"recycle"} and srv.total > calls
        (tmp_path / "run" / "select" / "selected.parquet").unlink()
        assert run() == {"select"}, "a deleted output re-runs its stage, which writes the same bytes"
        data.write_text(json.dumps([{**r, "output": r["output"] + " Indeed."} for r in records]))
        check({"load", "evalset", "recycle", *SCORES})

    # no pickle in anything these runs wrote: run directory, MLflow store and artifacts, caches
    from tests.fixtures.hygiene import pickles

    assert (tmp_path / "mlartifacts").is_dir() and (tmp_path / "home" / "cache").is_dir()
    assert list((tmp_path / "run").rglob("checkpoint-*/optimizer.pt")), "the scan should meet checkpoints"
    assert pickles(tmp_path) == []
