"""Tests for the `selectune` command line (selectune.cli.app), run in-process with typer's CliRunner."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner, Result

from selectune.cli.main import app

ALIASES = ("gemma-3-270m", "smollm2-135m-instruct", "minilm-l6")
SCORED_LINE = re.compile(r"scored (\d+) records -> .*\(cache hits (\d+), computed (\d+) ratings\)")
GOOD_ROWS = [
    {"instruction": "Name the capital of France.", "input": "", "output": "Paris."},
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
    {"instruction": "Translate to French.", "input": "good morning", "output": "bonjour"},
]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def ok(*args: str) -> Result:
    result = invoke(*args)
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result


def write_json(path: Path, rows: list[dict]) -> Path:
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return path


def scored_counts(result: Result) -> tuple[int, int, int]:
    """(records, cache hits, computed) from the `scored ...` line."""
    match = SCORED_LINE.search(result.stdout)
    assert match, f"no 'scored ...' line in:\n{result.output}"
    return int(match[1]), int(match[2]), int(match[3])


# --------------------------------------------------------------------------- data validate


def test_validate_prints_json_summary(tmp_path: Path) -> None:
    path = write_json(tmp_path / "good.json", [*GOOD_ROWS, GOOD_ROWS[0]])
    summary = json.loads(ok("data", "validate", "--input", path).stdout)
    assert summary["source"] == str(path)
    assert summary["fmt"] == "alpaca-json"
    assert (summary["rows_read"], summary["valid"], summary["rejected"], summary["duplicates"]) == (4, 3, 0, 1)
    assert "rejected_file" not in summary
    assert not (tmp_path / "good.json.rejected.jsonl").exists()


def test_validate_bad_row_exits_2_naming_file_row_and_field(tmp_path: Path) -> None:
    rows = [GOOD_ROWS[0], {"instruction": "Say hi.", "input": "", "output": ""}, GOOD_ROWS[1]]
    path = write_json(tmp_path / "bad.json", rows)
    result = invoke("data", "validate", "--input", path)
    assert result.exit_code == 2
    assert str(path) in result.output
    assert "row 2" in result.output
    assert "'output'" in result.output
    assert not (tmp_path / "bad.json.rejected.jsonl").exists()


def test_validate_skip_writes_rejections_side_file(tmp_path: Path) -> None:
    rows = [GOOD_ROWS[0], {"instruction": "Say hi.", "input": "", "output": "  "}, GOOD_ROWS[1]]
    path = write_json(tmp_path / "bad.json", rows)
    summary = json.loads(ok("data", "validate", "--input", path, "--on-invalid", "skip").stdout)
    assert (summary["rows_read"], summary["valid"], summary["rejected"]) == (3, 2, 1)
    side = tmp_path / "bad.json.rejected.jsonl"
    assert Path(summary["rejected_file"]) == side
    lines = side.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1
    rejection = json.loads(lines[0])
    assert rejection["row"] == 2 and rejection["field"] == "output"
    assert "empty" in rejection["reason"]
    assert "Say hi." in rejection["raw"]


def test_validate_rejects_unknown_on_invalid_mode(tmp_path: Path) -> None:
    path = write_json(tmp_path / "good.json", GOOD_ROWS)
    assert invoke("data", "validate", "--input", path, "--on-invalid", "ignore").exit_code == 2


def test_validate_missing_file_exits_2(tmp_path: Path) -> None:
    result = invoke("data", "validate", "--input", tmp_path / "nope.json")
    assert result.exit_code == 2
    assert "no such file" in result.output


# --------------------------------------------------------------------------- score selectit


@pytest.fixture
def fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh SELECTUNE_HOME (empty rating cache) for one test."""
    path = tmp_path / "home"
    monkeypatch.setenv("SELECTUNE_HOME", str(path))
    return path


@pytest.fixture
def data_file(tmp_path: Path, records: pd.DataFrame) -> Path:
    rows = records[["instruction", "input", "output", "label"]].to_dict(orient="records")
    return write_json(tmp_path / "data.json", rows)


def score(data: Path, out: Path, *models: str, extra: tuple[str, ...] = ()) -> Result:
    model_args = [arg for m in models for arg in ("--model", m)]
    return ok("score", "selectit", "--input", data, "--output", out, *model_args, "--dtype", "float32", *extra)


def test_score_writes_all_columns_and_uses_cache(
    fresh_home: Path, data_file: Path, tmp_path: Path, tiny_model: str, records: pd.DataFrame
) -> None:
    out = tmp_path / "out.parquet"
    n = len(records)
    first = score(data_file, out, tiny_model)
    assert scored_counts(first) == (n, 0, n * 5)
    assert (fresh_home / "cache" / "selectit.sqlite").is_file()

    df = pd.read_parquet(out)
    key = Path(tiny_model).name
    assert len(df) == n
    assert df["id"].tolist() == records["id"].tolist()
    for col in ("selectit_score", f"selectit_sentence.{key}", f"selectit_token.{key}", f"selectit_probs.{key}",
                f"selectit_base.{key}", "selectit_truncated"):
        assert col in df.columns, col
    assert df["selectit_score"].notna().all()
    assert df["selectit_score"].nunique() > 1  # random tiny model still separates records
    assert all(len(t) == 5 for t in df[f"selectit_token.{key}"])
    assert all(len(p) == 5 and all(len(row) == 5 for row in p) for p in df[f"selectit_probs.{key}"])
    assert all(set(b) <= set(range(1, 6)) for b in df[f"selectit_base.{key}"])
    assert df["selectit_truncated"].dtype == bool
    assert df["label"].tolist() == records["label"].tolist()  # extra columns pass through

    second = score(data_file, out, tiny_model)
    assert scored_counts(second) == (n, n * 5, 0)
    np.testing.assert_allclose(pd.read_parquet(out)["selectit_score"], df["selectit_score"])

    third = score(data_file, out, tiny_model, extra=("--no-cache",))
    assert scored_counts(third) == (n, 0, n * 5)
    np.testing.assert_allclose(pd.read_parquet(out)["selectit_score"], df["selectit_score"], rtol=1e-6)


def test_score_two_models_weighted(
    fresh_home: Path, data_file: Path, tmp_path: Path, tiny_model: str, tiny_model_2: str
) -> None:
    out = tmp_path / "two.parquet"
    result = score(data_file, out, tiny_model, tiny_model_2, extra=("--weights", "1,3"))
    df = pd.read_parquet(out)
    s_a = df[f"selectit_sentence.{Path(tiny_model).name}"].to_numpy()
    s_b = df[f"selectit_sentence.{Path(tiny_model_2).name}"].to_numpy()
    assert scored_counts(result)[2] == 2 * len(df) * 5
    assert np.allclose(df["selectit_score"], (1 * s_a + 3 * s_b) / 4)
    assert not np.allclose(df["selectit_score"], (3 * s_a + 1 * s_b) / 4)  # the weights really matter


def test_score_weights_must_match_models(fresh_home: Path, data_file: Path, tmp_path: Path, tiny_model: str) -> None:
    result = invoke("score", "selectit", "--input", data_file, "--output", tmp_path / "o.parquet",
                    "--model", tiny_model, "--weights", "1,3")
    assert result.exit_code == 2
    assert "2 weights given for 1 models" in result.output
    assert not (tmp_path / "o.parquet").exists()


def test_score_custom_rating_prompts(fresh_home: Path, data_file: Path, tmp_path: Path, tiny_model: str) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Rate the response from 1 to 5.\n\nScore it 1-5.\nHow good is it? 1 to 5.\n", encoding="utf-8")
    out = tmp_path / "p.parquet"
    result = score(data_file, out, tiny_model, extra=("--rating-prompts", str(prompts)))
    df = pd.read_parquet(out)
    key = Path(tiny_model).name
    assert scored_counts(result) == (len(df), 0, len(df) * 3)
    assert all(len(t) == 3 for t in df[f"selectit_token.{key}"])
    assert all(len(b) == 3 for b in df[f"selectit_base.{key}"])


def test_score_official_normalization_changes_scores_not_base(
    fresh_home: Path, data_file: Path, tmp_path: Path, tiny_model: str
) -> None:
    key = Path(tiny_model).name
    score(data_file, tmp_path / "paper.parquet", tiny_model)
    score(data_file, tmp_path / "official.parquet", tiny_model, extra=("--normalization", "official"))
    paper, official = pd.read_parquet(tmp_path / "paper.parquet"), pd.read_parquet(tmp_path / "official.parquet")
    assert not np.allclose(paper["selectit_score"], official["selectit_score"])
    assert np.stack(paper[f"selectit_base.{key}"]).tolist() == np.stack(official[f"selectit_base.{key}"]).tolist()
    assert paper["selectit_base_rating"].tolist() == official["selectit_base_rating"].tolist()


# --------------------------------------------------------------------------- select


@pytest.fixture
def scored(tmp_path: Path) -> pd.DataFrame:
    scores = [0.3, 2.5, 1.0, 4.0, 0.1, 3.2, 2.0, 1.5]
    df = pd.DataFrame({
        "id": [f"r{i}" for i in range(len(scores))],
        "instruction": [f"task {i}" for i in range(len(scores))],
        "input": ["" if i % 2 else f"ctx {i}" for i in range(len(scores))],
        "output": [f"answer {i}" for i in range(len(scores))],
        "label": ["good"] * len(scores),
        "selectit_score": scores,
        "other_score": scores[::-1],
    })
    df.to_parquet(tmp_path / "scored.parquet", index=False)
    return df


def test_select_fraction_writes_three_outputs(tmp_path: Path, scored: pd.DataFrame) -> None:
    out = tmp_path / "sel"
    ok("select", "--input", tmp_path / "scored.parquet", "--fraction", "0.5", "--output", out)

    table = pd.read_parquet(out / "selection.parquet")
    assert len(table) == len(scored)
    assert {"rank", "selected", "decision_reason"} <= set(table.columns)
    assert sorted(table["rank"]) == list(range(1, len(scored) + 1))
    assert table["selected"].sum() == len(scored) // 2
    assert table["decision_reason"].str.len().gt(0).all()

    top = scored.nlargest(len(scored) // 2, "selectit_score")
    selected = pd.read_parquet(out / "selected.parquet")
    assert len(selected) == len(scored) // 2
    assert selected["id"].tolist() == top["id"].tolist()  # rank order, best first

    alpaca = json.loads((out / "selected_alpaca.json").read_text(encoding="utf-8"))
    assert isinstance(alpaca, list) and len(alpaca) == len(selected)
    assert all(set(row) == {"instruction", "input", "output"} for row in alpaca)
    assert [row["instruction"] for row in alpaca] == top["instruction"].tolist()
    assert [row["input"] for row in alpaca] == top["input"].tolist()


def test_select_by_other_column(tmp_path: Path, scored: pd.DataFrame) -> None:
    out = tmp_path / "sel"
    ok("select", "--input", tmp_path / "scored.parquet", "--by", "other_score", "--k", "2", "--output", out)
    selected = pd.read_parquet(out / "selected.parquet")
    assert selected["id"].tolist() == scored.nlargest(2, "other_score")["id"].tolist()


def test_select_combined_with_quota_and_random(tmp_path: Path, scored: pd.DataFrame) -> None:
    scored["category"] = ["a", "a", "b", "a", "b", "a", "b", "b"]
    scored.to_parquet(tmp_path / "scored.parquet", index=False)
    out = tmp_path / "sel"
    # rank sums (selectit rank + (7 - other rank)): r3 14, r5 11, r7 9, r1 8, r6 6, r0 5, r2 3, r4 0
    ok("select", "--input", tmp_path / "scored.parquet", "--strategy", "combined", "--weight", "selectit_score=1",
       "--weight", "other_score=-1", "--k", "3", "--quota", "a=1", "--output", out)
    selected = pd.read_parquet(out / "selected.parquet")
    # categories r3 a, r5 a, r7 b, r1 a, r6 b; quota a=1 -> r3, r7, r6
    assert selected["id"].tolist() == ["r3", "r7", "r6"]
    table = pd.read_parquet(out / "selection.parquet")
    assert table.set_index("id").loc["r5", "decision"] == "quota_full"
    ok("select", "--input", tmp_path / "scored.parquet", "--strategy", "random", "--k", "4", "--seed", "7",
       "--output", tmp_path / "r1")
    ok("select", "--input", tmp_path / "scored.parquet", "--strategy", "random", "--k", "4", "--seed", "7",
       "--output", tmp_path / "r2")
    a, b = (pd.read_parquet(tmp_path / d / "selected.parquet")["id"].tolist() for d in ("r1", "r2"))
    assert a == b and len(a) == 4


def test_select_missing_column_exits_2(tmp_path: Path, scored: pd.DataFrame) -> None:
    out = tmp_path / "sel"
    result = invoke("select", "--input", tmp_path / "scored.parquet", "--by", "missing_col", "--output", out)
    assert result.exit_code == 2
    assert "missing_col" in result.output
    assert not (out / "selected.parquet").exists()


# --------------------------------------------------------------------------- models


def _tree(path: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*") if p.is_file()}


def test_models_list_reports_without_converting(monkeypatch: pytest.MonkeyPatch) -> None:
    from selectune.core import models
    from selectune.core.settings import home

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("`models list` must not convert or assemble models")

    monkeypatch.setattr(models, "convert_gguf", forbidden)
    monkeypatch.setattr(models, "_gguf_path", forbidden)
    before = _tree(home() / "models")
    result = ok("models", "list")
    assert _tree(home() / "models") == before

    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["alias", "kind", "source"]
    for alias in ALIASES:
        row = next((line for line in lines if line.split()[0] == alias), None)
        assert row is not None, f"{alias} missing from:\n{result.stdout}"
        assert row.split()[3] == ("yes" if models.is_cached(alias) else "no")


def test_models_pull_unknown_alias_exits_2() -> None:
    result = invoke("models", "pull", "nonexistent")
    assert result.exit_code == 2
    assert "nonexistent" in result.output
    for alias in ALIASES:
        assert alias in result.output


# --------------------------------------------------------------------------- help, imports, run


def test_help_lists_commands() -> None:
    result = ok("--help")
    for command in ("models", "data", "score", "select", "run"):
        assert re.search(rf"\b{command}\b", result.output), command
    sub = ok("score", "selectit", "--help")
    assert "--rating-prompts" in sub.output and "--no-cache" in sub.output


def test_cli_import_and_help_stay_light() -> None:
    code = ("import sys, selectune.cli.main\n"
            "print('torch' in sys.modules, 'transformers' in sys.modules)\n"
            "from typer.testing import CliRunner\n"
            "r = CliRunner().invoke(selectune.cli.main.app, ['--help'])\n"
            "print(r.exit_code, 'torch' in sys.modules, 'transformers' in sys.modules)\n")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["False False", "0 False False"]
    assert elapsed < 20, f"import + --help took {elapsed:.1f}s"


def test_run_rejects_invalid_recipe(tmp_path: Path) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("selectit:\n  rating_scale: many\n", encoding="utf-8")
    result = invoke("run", "--config", recipe)
    assert result.exit_code == 2
    assert str(recipe) in result.output
    assert "selectit.rating_scale" in result.output


def test_run_stops_before_any_work_when_a_service_does_not_answer(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """An unreachable MLflow server or teacher endpoint: exit 2 at once, naming the URL and what to do; nothing
    is written. A Prefect API that does not answer, in a fresh process (Prefect reads its settings at import)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"run_dir: {tmp_path / 'run'}\n", encoding="utf-8")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    result = invoke("run", "--config", recipe)
    assert result.exit_code == 2 and f"MLflow tracking server http://127.0.0.1:{port} is unreachable" in result.output
    assert "unset MLFLOW_TRACKING_URI" in result.output and not (tmp_path / "run").exists()
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    recipe.write_text(f"run_dir: {tmp_path / 'run'}\nreflection: {{enabled: true, teacher: {{backend: openai, "
                      f"model: m, base_url: 'http://127.0.0.1:{port}/v1'}}}}\n", encoding="utf-8")
    result = invoke("run", "--config", recipe)
    assert result.exit_code == 2 and f"teacher endpoint http://127.0.0.1:{port}/v1 is unreachable" in result.output
    recipe.write_text(f"run_dir: {tmp_path / 'run'}\nselectit: {{models: [gemma-3-270m]}}\n", encoding="utf-8")
    result = invoke("run", "--config", recipe, "--vllm-url", f"http://127.0.0.1:{port}/v1")
    assert result.exit_code == 2 and "vllm serve MODEL" in result.output and not (tmp_path / "run").exists()
    assert f"vLLM server (selectit) http://127.0.0.1:{port}/v1 is unreachable" in result.output
    env = {**__import__("os").environ, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    recipe.write_text(f"run_dir: {tmp_path / 'run'}\n", encoding="utf-8")
    proc = subprocess.run([str(Path(sys.executable).parent / "selectune"), "run", "--config", str(recipe)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and f"Prefect API http://127.0.0.1:{port}/api is unreachable" in proc.stderr
    assert not (tmp_path / "run").exists()
