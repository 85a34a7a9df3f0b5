"""Shared fixtures: an isolated SELECTUNE_HOME, a tiny random Llama model + tokenizer, demo records."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from tests.fixtures import ROOT, hygiene
from tests.fixtures.tiny import build_tiny_embedder, build_tiny_model

# Isolate every test session: its own caches and fingerprints. Converted embedded models (a one-off 20-50 s
# conversion each) are kept in a folder of this checkout (git-ignored) so repeated runs don't redo it; the
# user's own $SELECTUNE_HOME is never read or written.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="selectune-test-home-"))
_TEST_MODELS = Path(os.environ.get("SELECTUNE_TEST_MODELS", ROOT / ".selectune-test" / "models"))
_TEST_MODELS.mkdir(parents=True, exist_ok=True)
(_SESSION_HOME / "models").symlink_to(_TEST_MODELS.resolve(), target_is_directory=True)
os.environ["SELECTUNE_HOME"] = str(_SESSION_HOME)
_REPO_AT_START = hygiene.repo_state(ROOT)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session when a test wrote inside the repository or left a process running."""
    problems = []
    if written := hygiene.new_in_repo(ROOT, _REPO_AT_START):
        problems.append("tests wrote inside the repository: " + "; ".join(written[:20]))
    if alive := hygiene.survivors(os.getpid()):
        problems.append("processes started by the tests are still running: "
                        + "; ".join(f"{pid} {cmd[:160]}" for pid, cmd in alive.items()))
    if problems:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        session.config.get_terminal_writer().line("\n".join(["", "TEST HYGIENE:", *problems]), red=True)
os.environ.update({"DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1",
                   "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "TOKENIZERS_PARALLELISM": "false"})


@pytest.fixture(scope="session")
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One PREFECT_HOME for the tests that run `selectune run` as a command: its database is created and migrated
    once (tens of seconds), not once per test."""
    return tmp_path_factory.mktemp("prefect-home")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama"))


@pytest.fixture(scope="session")
def tiny_model_2(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny2") / "tiny-llama-b", seed=1))


@pytest.fixture(scope="session")
def tiny_embedder(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_tiny_embedder(tmp_path_factory.mktemp("embedder"))


@pytest.fixture
def records() -> pd.DataFrame:
    from selectune.data.records import record_id

    rows = [
        ("What is the capital of France?", "", "Paris is the capital of France."),
        ("Add two and three.", "", "2 + 3 = 5"),
        ("Translate to French", "good morning", "bonjour"),
        ("Write a python function that returns the sum of a list.", "",
         "def total(xs):\n    return sum(xs)\n\nIt adds every number in the list and returns the result."),
        ("List three colors.", "", "ok"),
        ("Explain what a function is in code, in a long answer, with an example and a list of points.", "",
         "A function is a named block of code. " * 12),
    ]
    df = pd.DataFrame(rows, columns=["instruction", "input", "output"])
    df.insert(0, "id", [record_id(*r) for r in rows])
    df["label"] = ["good", "good", "good", "good", "poor", "good"]
    return df


@pytest.fixture
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite MLflow store in tmp_path, which is also the working directory."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri
