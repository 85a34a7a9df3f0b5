"""Prompts and LLM calls in MLflow: every prompt a stage used (its text as an artifact, its digest as a tag, a
version in MLflow's prompt registry when the text is new) and one trace span per teacher call, so a reviewer can
open a rejected rewrite and read what was asked and answered. Nothing here ever sees an API key or headers."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def log_prompts(prompts: Mapping[str, str]) -> dict[str, str]:
    """Into the active run, per ``name -> text``: ``prompts/<name>.txt``, tag ``selectune.prompt.<name>`` = its
    digest, and prompt ``selectune-<name>`` in the prompt registry (a new version only when the text differs from
    the latest). Returns {name: "prompts:/selectune-<name>/<version>"}; a registry that refuses is logged, not
    raised (the text and digest are in the run either way)."""
    import mlflow

    uris = {}
    for name, text in prompts.items():
        mlflow.log_text(text, f"prompts/{name}.txt")
        mlflow.set_tag(f"selectune.prompt.{name}", digest(text))
        registered = f"selectune-{name}"
        try:
            try:
                latest = mlflow.genai.load_prompt(f"prompts:/{registered}@latest")
            except Exception:  # noqa: BLE001 - no such prompt yet
                latest = None
            version = latest if latest is not None and latest.template == text else mlflow.genai.register_prompt(
                registered, text, commit_message=f"selectune run {mlflow.active_run().info.run_id}",
                tags={"digest": digest(text)})
            uris[name] = f"prompts:/{registered}/{version.version}"
            mlflow.set_tag(f"selectune.prompt.{name}.uri", uris[name])
        except Exception as err:  # noqa: BLE001 - e.g. a tracking server without the prompt registry
            log.warning("prompt %s not registered in MLflow: %s", registered, err)
    return uris


def flush_traces() -> None:
    """Write out the trace spans still queued for export (MLflow exports them in the background)."""
    import mlflow

    try:
        mlflow.flush_trace_async_logging()
    except Exception as err:  # noqa: BLE001 - tracing must never fail a stage
        log.warning("trace spans not flushed: %s", err)


def trace_call(name: str, messages: Any, reply: str, attributes: Mapping[str, Any], start_ns: int,
               end_ns: int) -> None:
    """One LLM span in the active run's experiment, linked to the run: the messages in, the reply out, and
    ``attributes`` (backend, model, latency, tokens, retries, parse outcome...). A tracing failure is logged."""
    import mlflow

    run = mlflow.active_run()
    if run is None:
        return
    try:
        span = mlflow.start_span_no_context(
            name, span_type="LLM", inputs={"messages": messages}, start_time_ns=start_ns,
            attributes={k: v for k, v in attributes.items() if v is not None},
            metadata={"mlflow.sourceRun": run.info.run_id}, experiment_id=run.info.experiment_id)
        span.set_outputs({"text": reply})
        span.end(end_time_ns=max(end_ns, start_ns))
    except Exception as err:  # noqa: BLE001 - tracing must never fail a stage
        log.warning("teacher call not traced: %s", err)
