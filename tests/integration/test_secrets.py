"""No API key anywhere: `selectune run` with a remote teacher, its key from the environment and then from a Prefect
Secret block; every byte under the run directory, the MLflow store and artifacts, the caches and PREFECT_HOME (its
database included), and the command's stdout and stderr, is searched for the key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.openai_server import FakeOpenAI

SELECTUNE = str(Path(sys.executable).parent / "selectune")
KEY = "sk-e2e-7f3a9c1b5d2e8f40-never-store"


def _hits(root: Path, needles: list[bytes]) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and any(n in p.read_bytes() for n in needles)]


@pytest.mark.parametrize("source", ["environment", "secret_block"])
def test_the_teacher_key_is_written_nowhere(tmp_path, tiny_model, prefect_home, source) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "OPENAI_API_KEY")}
    env.update(SELECTUNE_HOME=str(tmp_path / "home"), PREFECT_HOME=str(prefect_home),
               MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    data = tmp_path / "d.json"
    data.write_text(json.dumps([{"instruction": f"Explain item {i} in detail.", "input": "",
                                 "output": f"Item {i} is explained here with several words."} for i in range(6)]))
    teacher: dict = {"backend": "openai", "model": "m", "max_retries": 0}
    if source == "environment":
        env["OPENAI_API_KEY"] = KEY
    else:  # saved into PREFECT_HOME's database, read by the recycling task
        teacher["api_key_secret"] = "teacher-key"
        save = ("import sys; from prefect.blocks.system import Secret; from selectune.cli.server import prefect_api\n"
                "with prefect_api(): Secret(value=sys.argv[1]).save('teacher-key', overwrite=True)")
        subprocess.run([sys.executable, "-c", save, KEY], env=env, check=True, capture_output=True, timeout=300)
    with FakeOpenAI({"reflector": True}) as srv:
        recipe = tmp_path / "r.json"
        recipe.write_text(json.dumps({
            "run_dir": str(tmp_path / "run"), "data": {"input": str(data)},
            "selectit": {"models": [tiny_model], "dtype": "float32"},
            "reflection": {"enabled": True, "student": {"model": tiny_model, "dtype": "float32"},
                           "teacher": {**teacher, "base_url": srv.url}},
            "tune": {"enabled": False}, "eval": {"enabled": False}}))
        run = subprocess.run([SELECTUNE, "run", "--config", str(recipe)], env=env, cwd=tmp_path,
                             capture_output=True, timeout=600)
        sent = {h.get("authorization") for h in srv.headers}
    assert run.returncode == 0, run.stderr[-3000:]
    assert srv.total > 0 and sent == {f"Bearer {KEY}"}  # the key was used
    needles = [KEY.encode(), KEY[3:].encode()]  # also without its prefix
    assert list(prefect_home.rglob("*.db"))  # Prefect's database, shared by the tests that run the command
    assert _hits(tmp_path, needles) == [] and _hits(prefect_home, needles) == []  # Secret blocks are encrypted
    assert not any(n in run.stdout or n in run.stderr for n in needles)
