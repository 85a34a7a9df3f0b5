"""The pyfunc model the registry holds: its artifact is a selectune adapter folder; it answers with greedy replies.
This module imports mlflow at the top (the class must be importable by name when MLflow loads the model)."""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import pandas as pd

from selectune.core.lora import load_adapter, read_meta


class AdapterModel(mlflow.pyfunc.PythonModel):
    """pyfunc: a DataFrame with ``instruction`` (and optional ``input``) -> greedy replies."""

    def load_context(self, context: Any) -> None:
        self.model, self.tokenizer = load_adapter(context.artifacts["adapter"])
        self.template = read_meta(context.artifacts["adapter"])["template"]

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> list[str]:
        from selectune.core.generate import generate
        from selectune.core.prompts import prompt_ids

        inputs = model_input["input"] if "input" in model_input else [""] * len(model_input)
        prompts = [prompt_ids(self.template, self.tokenizer, i, x or "")
                   for i, x in zip(model_input["instruction"], inputs, strict=True)]
        max_new = int((params or {}).get("max_new_tokens", 128))
        return [g.text.strip() for g in generate(self.model, self.tokenizer, prompts, max_new)]
