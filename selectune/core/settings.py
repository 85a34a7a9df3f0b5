"""Process-wide settings: artifact home, telemetry switches, device and dtype choice."""

from __future__ import annotations

import os
from pathlib import Path

# Values forced before Prefect or MLflow start. MLflow honours DO_NOT_TRACK only as "true".
TELEMETRY_OFF = {
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}


def disable_telemetry() -> None:
    """Switch off every usage-reporting channel of the libraries we start."""
    os.environ.update(TELEMETRY_OFF)


def home() -> Path:
    """Root folder for converted models, caches and other reusable artifacts."""
    return Path(os.environ.get("SELECTUNE_HOME", "~/.cache/selectune")).expanduser()


def device() -> str:
    """Best available torch device: cuda, mps or cpu."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(name: str, dev: str | None = None) -> str:
    """Map "auto" to bfloat16 where the device computes it natively, else float32."""
    if name != "auto":
        if name not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"unknown dtype {name!r}; expected auto, float32, bfloat16 or float16")
        return name
    import torch

    dev = dev or device()
    if dev == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if dev == "cpu" and torch.cpu._is_avx512_bf16_supported():
        return "bfloat16"
    return "float32"


def resolve_attn(name: str, dev: str, dtype: str) -> str:
    """Map "auto" to eager attention for bfloat16 on CPU (measured faster there), else sdpa."""
    if name != "auto":
        return name
    return "eager" if dev == "cpu" and dtype == "bfloat16" else "sdpa"
