"""Prefect servers shared by the integration tests (each start costs 15-30 s on two cores): the in-process test
harness for flows called from the tests, a real `prefect server` for command-line runs and distributed tasks. Both
stop after the last integration test."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="package")
def prefect_server():
    """Flows called in this process report to a temporary Prefect server (SQLite)."""
    from prefect.testing.utilities import prefect_test_harness

    from tests.fixtures.servers import NO_RECORDER

    with pytest.MonkeyPatch.context() as mp:
        for name, value in NO_RECORDER.items():
            mp.setenv(name, value)  # read by the harness's server process
        with prefect_test_harness(server_startup_timeout=120):
            yield


@pytest.fixture(scope="package")
def prefect_api_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A real `prefect server` on 127.0.0.1; its client environment (PREFECT_API_URL, PREFECT_HOME)."""
    from tests.fixtures.servers import prefect_server as real_server

    with real_server(tmp_path_factory.mktemp("prefect-api")) as env:
        yield env
