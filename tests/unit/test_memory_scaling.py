"""bench/memory_scaling.py at a tiny size: the three commands run in fresh processes on its synthetic files, the
counts check out (1% duplicates dropped, 20% of the scored records selected) and each row reports a peak RSS read from
the kernel."""

from __future__ import annotations

import importlib.util
import json

from tests.fixtures import ROOT


def test_memory_scaling_small(tmp_path) -> None:
    spec = importlib.util.spec_from_file_location("memory_scaling", ROOT / "bench" / "memory_scaling.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.main(["--sizes", "300", "--formats", "jsonl,json,csv", "--json", str(tmp_path / "mem.json")])
    assert [(r["stage"], r["format"]) for r in rows] == [("data validate", "jsonl"), ("score selectit", "jsonl"),
                                                         ("select", "jsonl"), ("data validate", "json"),
                                                         ("data validate", "csv")]
    assert all(50 < r["peak_rss_mb"] < 4000 and r["seconds"] > 0 for r in rows)
    assert json.loads((tmp_path / "mem.json").read_text()) == rows
