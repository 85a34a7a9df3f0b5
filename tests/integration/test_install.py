"""The built wheel, installed outside the checkout, runs the pipeline in an empty folder: the demo data ships in
the package and is the default input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.fixtures import ROOT


def test_the_installed_wheel_runs_in_an_empty_folder(tmp_path, tiny_model, mlflow_store, prefect_home) -> None:
    wheels, site, work = tmp_path / "wheels", tmp_path / "site", tmp_path / "empty"
    work.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    source = tmp_path / "source"  # a copy: building in the checkout would leave build/ there
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.splitlines()
    for name in files:
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)], check=True,
                   capture_output=True, cwd=tmp_path)
    (wheel,) = wheels.glob("selectune-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PYTHONPATH")}
    env.update(PYTHONPATH=str(site), SELECTUNE_HOME=str(tmp_path / "home"), MLFLOW_TRACKING_URI=mlflow_store,
               PREFECT_HOME=str(prefect_home))
    where = subprocess.run([sys.executable, "-c", "import selectune, selectune.data.config as c; "
                            "print(selectune.__file__); print(c.DataConfig().input)"],
                           env=env, cwd=work, capture_output=True, text=True, check=True).stdout.split()
    assert all(Path(p).is_relative_to(site) for p in where) and Path(where[1]).is_file()  # not the checkout's
    # a recipe with no data.input: only the rater (a tiny local model) and the stages to run
    (work / "r.yaml").write_text(json.dumps({"selectit": {"models": [tiny_model], "dtype": "float32"},
                                             "tune": {"enabled": False}, "eval": {"enabled": False}}))
    run = subprocess.run([sys.executable, "-c", "from selectune.cli.main import app; app()", "run", "--config",
                          "r.yaml", "--limit", "8", "--run-dir", "out"], env=env, cwd=work, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    summary = json.loads(run.stdout[: run.stdout.index("\n}") + 2])
    assert summary["records_in"] == 8 and (work / "out" / "select" / "selected.parquet").is_file()
    assert sorted(p.name for p in work.iterdir()) == ["out", "r.yaml"]
