"""run_stage: typed outputs, the manifest written last, skipping on a matching key, never on a failed run."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from selectune.config import DataConfig
from selectune.stage import MANIFEST, run_stage


@dataclass(frozen=True)
class Outputs:
    table: Path
    note: str | None = None


def test_outputs_are_typed_and_a_matching_manifest_skips(tmp_path: Path) -> None:
    calls: list[Path] = []

    def body(out: Path) -> tuple[Outputs, dict[str, float]]:
        calls.append(out)
        (out / "t.txt").write_text("x")
        return Outputs(out / "t.txt"), {"rows": 3}

    cfg = DataConfig(input="a.json")
    first = run_stage("demo", tmp_path, cfg, {"input": "d1"}, body, Outputs)
    assert first.outputs == Outputs(tmp_path / "demo" / "t.txt") and not first.skipped and len(calls) == 1
    manifest = json.loads((tmp_path / "demo" / MANIFEST).read_text())
    assert manifest["outputs"] == {"table": str(tmp_path / "demo" / "t.txt"), "note": None}
    assert manifest["metrics"]["rows"] == 3 and manifest["metrics"]["seconds"] >= 0
    again = run_stage("demo", tmp_path, cfg, {"input": "d1"}, body, Outputs)
    assert again.skipped and len(calls) == 1
    assert again.outputs == first.outputs and isinstance(again.outputs.table, Path)  # typed after a skip too
    assert again.outputs_json() == {"table": str(tmp_path / "demo" / "t.txt"), "note": None}
    run_stage("demo", tmp_path, cfg, {"input": "d2"}, body, Outputs)  # new input: runs again
    run_stage("demo", tmp_path, cfg.model_copy(update={"limit": 2}), {"input": "d2"}, body, Outputs)  # new config
    assert len(calls) == 3
    (tmp_path / "demo" / "t.txt").unlink()  # the manifest matches, but its output is gone: run again
    rerun = run_stage("demo", tmp_path, cfg.model_copy(update={"limit": 2}), {"input": "d2"}, body, Outputs)
    assert not rerun.skipped and len(calls) == 4 and (tmp_path / "demo" / "t.txt").is_file()


def test_a_failed_body_leaves_no_manifest(tmp_path: Path) -> None:
    def ok(out: Path) -> tuple[Outputs, dict[str, float]]:
        return Outputs(out / "t"), {}

    def broken(out: Path) -> tuple[Outputs, dict[str, float]]:
        raise RuntimeError("boom")

    cfg = DataConfig(input="a.json")
    run_stage("demo", tmp_path, cfg, {"input": "d1"}, ok, Outputs)
    with pytest.raises(RuntimeError, match="boom"):
        run_stage("demo", tmp_path, cfg, {"input": "d2"}, broken, Outputs)
    assert not (tmp_path / "demo" / MANIFEST).exists()  # the old manifest is gone: nothing stale is reused
