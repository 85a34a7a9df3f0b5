"""The tuned adapter in the MLflow Model Registry: logged as a pyfunc whose artifact is the adapter folder
(safetensors + tokenizer + ``selectune.json``), registered with lineage tags, and reloaded as base + adapter.

A PEFT model from a locally built base does not round-trip through ``mlflow.transformers``, so the registry
holds the adapter files and :func:`load` rebuilds the model from the recorded base (checked by fingerprint).
This module imports mlflow at the top (the pyfunc class must be importable by name); import it lazily.
"""

from __future__ import annotations

import warnings
from pathlib import Path
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


def log_and_register(adapter_dir: str | Path, name: str, tags: dict[str, str]) -> str:
    """Log the adapter as a pyfunc model in the active run, register it as ``name``, tag the version;
    returns ``models:/name/version``."""
    import peft
    import torch
    import transformers
    from mlflow.models import ModelSignature
    from mlflow.tracking import MlflowClient
    from mlflow.types import ColSpec, Schema

    reqs = [f"torch=={torch.__version__.split('+')[0]}", f"transformers=={transformers.__version__}",
            f"peft=={peft.__version__}", "safetensors"]
    signature = ModelSignature(Schema([ColSpec("string", "instruction"), ColSpec("string", "input", required=False)]),
                               Schema([ColSpec("string")]))
    with warnings.catch_warnings():  # no input example: MLflow would load the model to validate it
        warnings.filterwarnings("ignore", message=".*input example", category=UserWarning)
        info = mlflow.pyfunc.log_model(name="model", python_model=AdapterModel(),
                                       artifacts={"adapter": str(adapter_dir)}, registered_model_name=name,
                                       pip_requirements=reqs, signature=signature)
    version = info.registered_model_version
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, str(value))
    return f"models:/{name}/{version}"


def load(uri: str, device: str = "cpu", dtype: str | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) from ``models:/NAME/VERSION`` (or any MLflow model URI) or a local adapter folder."""
    from selectune.tracking import adapter_folder

    folder = adapter_folder(uri)
    if folder is None:
        raise FileNotFoundError(f"{uri}: not a selectune adapter folder or MLflow model URI")
    return load_adapter(folder, device, dtype)
