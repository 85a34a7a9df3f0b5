"""Config of the load stage."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from selectune.core.config import Config


class DataConfig(Config):
    """Load and validate the instruction dataset."""

    input: str = Field("data/demo/demo.json", description="Alpaca JSON/JSONL, ShareGPT JSON, CSV, Parquet, "
                       "a saved HF dataset folder, or hf://owner/name")
    format: str | None = Field(None, description="Override the format detected from the extension")
    on_invalid: Literal["error", "skip"] = Field("error", description="Stop at the first bad row, or skip bad "
                                                 "rows and write them with reasons to rejected.jsonl")
    limit: int | None = Field(None, ge=1, description="Keep only the first N valid records (smoke runs)")
