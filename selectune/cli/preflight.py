"""Before a run does any work: is every service it will talk to reachable? An unreachable MLflow tracking server,
Prefect API, teacher, judge or vLLM server is reported at once, with its URL and what to do, instead of after the
models have loaded or halfway through the flow. Any HTTP answer counts as reachable (an endpoint that wants a key
answers 401); only a refused connection, a failed name lookup or a timeout does not."""

from __future__ import annotations

import os
from typing import Any

TIMEOUT_S = 5.0


def unreachable(url: str, timeout: float = TIMEOUT_S) -> str | None:
    """Why ``url`` cannot be reached (None when some HTTP server answered)."""
    import httpx

    try:
        httpx.get(url, timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as err:
        return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    return None


def endpoints(cfg: Any) -> list[tuple[str, str, str]]:
    """(what, URL to probe, what to do) for each remote service a pipeline config will use."""
    from prefect.settings import PREFECT_API_URL

    out = []
    mlflow_uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if mlflow_uri.startswith(("http://", "https://")):
        out.append(("MLflow tracking server", mlflow_uri.rstrip("/") + "/health",
                    "start it, or unset MLFLOW_TRACKING_URI to track in ./mlflow.db"))
    if api := PREFECT_API_URL.value():
        out.append(("Prefect API", api.rstrip("/") + "/health",
                    "start it (prefect server start), or unset PREFECT_API_URL to run with a temporary local server"))
    teacher = cfg.reflection.teacher
    if cfg.reflection.enabled and teacher.backend == "openai" and teacher.base_url:
        out.append(("teacher endpoint", teacher.base_url.rstrip("/") + "/models",
                    "check reflection.teacher.base_url, or use a local teacher (backend: hf)"))
    if cfg.eval.enabled and cfg.eval.judge and cfg.eval.judge.startswith("openai:") and cfg.eval.judge_base_url:
        out.append(("evaluation judge endpoint", cfg.eval.judge_base_url.rstrip("/") + "/models",
                    "check eval.judge_base_url"))
    for what, section in vllm_sections(cfg):
        urls = section.vllm.base_url
        for url in sorted(set(urls.values() if isinstance(urls, dict) else [urls] if urls else [])):
            out.append((f"vLLM server ({what})", url.rstrip("/") + "/models",
                        f"start it (vllm serve MODEL), or check {what}.vllm.base_url"))
    return out


def vllm_sections(cfg: Any) -> list[tuple[str, Any]]:
    """(name, config) of every section of a pipeline config that will run a model on the vLLM backend."""
    sections = [("selectit", cfg.selectit, True), ("ifd", cfg.ifd, cfg.ifd.enabled),
                ("reflection.student", cfg.reflection.student, cfg.reflection.enabled),
                ("reflection.teacher", cfg.reflection.teacher, cfg.reflection.enabled),
                ("judge", cfg.judge, cfg.judge.enabled), ("eval", cfg.eval, cfg.eval.enabled)]
    return [(name, section) for name, section, used in sections if used and section.backend == "vllm"]


def check(cfg: Any) -> list[str]:
    """One message per unreachable service (URL, reason, what to do); empty when all answer."""
    problems = []
    for what, url, todo in endpoints(cfg):
        if (why := unreachable(url)) is not None:
            problems.append(f"{what} {url.rsplit('/', 1)[0]} is unreachable ({why}): {todo}")
    return problems
