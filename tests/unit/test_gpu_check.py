"""bench/gpu_check.py's dry run on CPU: the tiny model is built from its config, every workload runs through the
project's engines and the official loops, the two agree, and the MFU figures follow the formula."""

from __future__ import annotations

import importlib.util
import json

from tests.fixtures import ROOT


def test_gpu_check_dry_run(tmp_path) -> None:
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    fig = gpu_check.main(["--dry-run", "--json", str(tmp_path / "fig.json")])
    (m,) = fig["models"]
    assert m["checked"] and m["shape"] == "tiny" and fig["matmul_peak_tflops"] > 0
    assert m["non_embedding_params"] == 2 * (4 * 64 * 16 + 64 * 64 * 2 + 3 * 64 * 128 + 2 * 64) + 64 + 64 * 512
    for part, rate in (("selectit", "ratings_per_s"), ("ifd", "sequences_per_s"), ("lora", "tokens_per_s")):
        assert m[part][rate] > 0 and 0 < m[part]["mfu"] < 1
    assert json.loads((tmp_path / "fig.json").read_text())["models"][0]["selectit"] == m["selectit"]
