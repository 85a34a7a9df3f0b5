"""The tuned adapter in the MLflow Model Registry: logged as a pyfunc whose artifact is the adapter folder
(safetensors + tokenizer + ``selectune.json``), registered with lineage tags, and reloaded as base + adapter.

A PEFT model from a locally built base does not round-trip through ``mlflow.transformers``, so the registry
holds the adapter files and :func:`load` rebuilds the model from the recorded base (checked by fingerprint).
This module imports mlflow at the top (the pyfunc class must be importable by name); import it lazily.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd

from selectune.sft import META


def read_meta(adapter_dir: str | Path) -> dict[str, Any]:
    path = Path(adapter_dir) / META
    if not path.is_file():
        raise FileNotFoundError(f"{adapter_dir}: no {META}; not an adapter folder written by selectune")
    return json.loads(path.read_text())


def load_local(adapter_dir: str | Path, device: str = "cpu", dtype: str | None = None) -> tuple[Any, Any]:
    """(PeftModel in eval mode, tokenizer) from an adapter folder and the base it records. ``dtype`` None: as
    :func:`selectune.sft.train` returns it, base weights in the training dtype (bf16-rounded where trained so),
    upcast to float32 on CPU (bf16 decoding is slower there); else the base weights in ``dtype``."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    from selectune import models

    meta = read_meta(adapter_dir)
    found = models.fingerprint(meta["base"])
    if found != meta["base_fingerprint"]:
        raise ValueError(f"{adapter_dir}: base model {meta['base']!r} has fingerprint {found}, but the adapter was "
                         f"trained on {meta['base_fingerprint']}; the outputs would differ")
    base, _ = models.load_causal_lm(meta["base"], dtype or meta["dtype"], device)
    with warnings.catch_warnings():  # peft 0.21 reads a property transformers 5 deprecates
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        model = PeftModel.from_pretrained(base, str(adapter_dir))
    if dtype is None and device == "cpu":
        model.float()
    return model.to(device).eval(), AutoTokenizer.from_pretrained(str(adapter_dir))


class AdapterModel(mlflow.pyfunc.PythonModel):
    """pyfunc: a DataFrame with ``instruction`` (and optional ``input``) -> greedy replies."""

    def load_context(self, context: Any) -> None:
        self.model, self.tokenizer = load_local(context.artifacts["adapter"])
        self.template = read_meta(context.artifacts["adapter"])["template"]

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> list[str]:
        from selectune.evaluate import generate
        from selectune.sft_data import prompt_ids

        inputs = model_input["input"] if "input" in model_input else [""] * len(model_input)
        prompts = [prompt_ids(self.template, self.tokenizer, i, x or "")
                   for i, x in zip(model_input["instruction"], inputs, strict=True)]
        return generate(self.model, self.tokenizer, prompts, int((params or {}).get("max_new_tokens", 128)))


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
    if Path(uri).is_dir():
        return load_local(uri, device, dtype)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    found = sorted(p.parent for p in local.rglob(META))
    if not found:
        raise FileNotFoundError(f"{uri}: no selectune adapter ({META}) among the model's artifacts")
    return load_local(found[0], device, dtype)
