"""Config of the tuning stage."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from selectune.core.config import LoRATraining


class TuneConfig(LoRATraining):
    """LoRA instruction tuning (peft) on the selected subset."""

    renamed: ClassVar[dict[str, str]] = {"max_length": "max_tokens"}
    runtime: ClassVar[tuple[str, ...]] = (*LoRATraining.runtime, "enabled")
    enabled: bool = Field(True, description="Run the tuning stage in the pipeline flow")
    packing: bool = Field(False, description="Pack examples into max_tokens sequences")
    eval_fraction: float = Field(0.1, ge=0, lt=1, description="Held-out split of the selected set for eval loss")
    heldout: str | None = Field(None, description="Held-out records (any data format) for evaluation; default "
                                "the eval split")
    eval_prompts: int = Field(8, ge=0, description="Generations logged as an MLflow table after training")
    max_new_tokens: int = Field(128, ge=1, description="Tokens per evaluation generation")
    merge: bool = Field(False, description="Also save the merged model")
    register_as: str | None = Field("selectune-sft", description="MLflow Model Registry name (None: skip)")
