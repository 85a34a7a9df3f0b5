"""Config of the load stage."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from selectune.core.config import Config

DEMO = Path(__file__).resolve().parent / "demo" / "demo.json"  # 150 hand-written records, shipped in the package


class DataConfig(Config):
    """Load and validate the instruction dataset."""

    paths: ClassVar[tuple[str, ...]] = ("input",)  # read from the recipe's folder when relative
    input: str = Field(str(DEMO), description="Alpaca JSON/JSONL, ShareGPT JSON, CSV, Parquet, a saved HF dataset "
                       "folder, a folder of parts, or hf://owner/name; default the bundled demo set")
    format: str | None = Field(None, description="Override the format detected from the extension")
    on_invalid: Literal["error", "skip"] = Field("error", description="Stop at the first bad row, or skip bad "
                                                 "rows and write them with reasons to rejected.jsonl")
    limit: int | None = Field(None, ge=1, description="Keep only the first N valid records (smoke runs)")
