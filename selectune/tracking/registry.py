"""The MLflow Model Registry: adapters logged and registered with lineage tags, model references resolved
(``models:/NAME/latest`` and ``models:/NAME@ALIAS`` pinned to a version), the ``champion`` / ``challenger``
aliases, identities for stage keys, and the retraining decision.

A PEFT model from a locally built base does not round-trip through ``mlflow.transformers``, so the registry
holds the adapter folder (safetensors + tokenizer + ``selectune.json``) as the artifact of a pyfunc model
(:mod:`selectune.tracking.adapter_model`), and :func:`load` rebuilds the model from the recorded base.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selectune.core.lora import META, load_adapter

CHAMPION, CHALLENGER = "champion", "challenger"
HISTORY = "selectune.champion_history"  # registered-model tag: the versions that were champion, oldest first
PYFUNC_CODE = Path(__file__).with_name("pyfunc_code.py")  # the registered model, as code (models-from-code)


def log_and_register(adapter_dir: str | Path, name: str, tags: dict[str, str]) -> str:
    """Log the adapter as a pyfunc model in the active run, register it as ``name``, tag the version;
    returns ``models:/name/version``."""
    import mlflow
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
        info = mlflow.pyfunc.log_model(name="model", python_model=str(PYFUNC_CODE),  # code, not a pickle
                                       artifacts={"adapter": str(adapter_dir)}, registered_model_name=name,
                                       pip_requirements=reqs, signature=signature)
    version = info.registered_model_version
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, str(value))
    client.set_registered_model_alias(name, CHALLENGER, str(version))
    return f"models:/{name}/{version}"


def load(uri: str, device: str = "cpu", dtype: str | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) from ``models:/NAME/VERSION`` (or any MLflow model URI) or a local adapter folder."""
    folder = adapter_folder(uri)
    if folder is None:
        raise FileNotFoundError(f"{uri}: not a selectune adapter folder or MLflow model URI")
    return load_adapter(folder, device, dtype)


def adapter_folder(ref: str) -> Path | None:
    """Local selectune adapter folder of an adapter path or an MLflow model URI (downloaded); None for anything
    else (an alias, a model folder, a hub id)."""
    if ref.startswith(("models:/", "runs:/")):
        import mlflow

        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=ref))
        found = sorted(p.parent for p in local.rglob(META))
        if not found:
            raise FileNotFoundError(f"{ref}: no selectune adapter ({META}) among the model's artifacts")
        return found[0]
    path = Path(ref).expanduser()
    return path if (path / META).is_file() else None


def split_ref(ref: str) -> tuple[str, str] | None:
    """``(name, selector)`` of a registry reference: ``models:/NAME/VERSION`` or ``/latest`` (selector: the
    version or "latest"), ``models:/NAME@ALIAS`` (selector: "@ALIAS"); None for anything else."""
    if not ref.startswith("models:/"):
        return None
    body = ref[len("models:/"):]
    if "@" in body:
        name, alias = body.rsplit("@", 1)
        return (name, f"@{alias}") if name and alias else None
    name, _, selector = body.rpartition("/")
    return (name, selector) if name and selector else None


def resolve_ref(ref: str) -> str:
    """``models:/NAME/latest`` and ``models:/NAME@ALIAS`` pinned to their version number (so a run uses one
    version throughout, whatever the aliases do meanwhile); any other reference unchanged."""
    parts = split_ref(ref)
    if parts is None or parts[1].isdigit():
        return ref
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    name, selector = parts
    client = MlflowClient()
    if selector.startswith("@"):
        try:
            version = client.get_model_version_by_alias(name, selector[1:]).version
        except MlflowException as err:
            raise ValueError(f"{ref}: model {name!r} has no version with alias {selector[1:]!r}") from err
        return f"models:/{name}/{version}"
    if selector != "latest":
        return ref
    versions = client.search_model_versions(f"name='{name}'")
    if not versions:
        raise ValueError(f"{ref}: no registered versions of model {name!r}")
    return f"models:/{name}/{max(int(v.version) for v in versions)}"


def alias_version(name: str, alias: str) -> int | None:
    """The version holding ``alias``, or None (no such alias or model)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        return int(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def champion_history(name: str) -> list[int]:
    """The versions that were champion, oldest first (the current one last)."""
    from mlflow.tracking import MlflowClient

    tag = MlflowClient().get_registered_model(name).tags.get(HISTORY, "")
    return [int(v) for v in tag.split(",") if v]


def set_champion(name: str, version: int, history: bool = True) -> None:
    """Move the ``champion`` alias to ``version`` (nothing is deleted) and, with ``history``, append it to the
    champion history that rollback walks back."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    client.get_model_version(name, str(version))  # a clear MLflow error for an unknown version
    client.set_registered_model_alias(name, CHAMPION, str(version))
    past = champion_history(name)
    if history and past[-1:] != [version]:  # idempotent: a retried promotion does not repeat itself
        client.set_registered_model_tag(name, HISTORY, ",".join(map(str, [*past, version])))


def rollback(name: str) -> int:
    """Give ``champion`` back to the version that held it before the current one; returns that version."""
    from mlflow.tracking import MlflowClient

    past = champion_history(name)
    if len(past) < 2:
        raise ValueError(f"model {name!r}: no earlier champion to roll back to (history: {past or 'empty'})")
    set_champion(name, past[-2], history=False)
    MlflowClient().set_registered_model_tag(name, HISTORY, ",".join(map(str, past[:-1])))
    return past[-2]


def model_digest(ref: str) -> str:
    """Identity of a model reference: the registry URI (``latest`` and aliases pinned), else the content
    fingerprint."""
    from selectune.core import models

    ref = resolve_ref(ref)
    return ref if ref.startswith(("models:/", "runs:/")) else models.fingerprint(ref)


def retrain_needed(model_name: str | None, digest: str) -> str | None:
    """Why the tuning stage must run, or None when the latest registered version was trained on this subset."""
    if not model_name:
        return "no registry name: always train"
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        versions = MlflowClient().search_model_versions(f"name = '{model_name}'", order_by=["version_number DESC"],
                                                        max_results=1)
    except MlflowException:
        return f"no registered model {model_name!r} yet"
    if not versions:
        return f"no registered model {model_name!r} yet"
    last = versions[0]
    if last.tags.get("selectune.selected_digest") != digest:
        return f"selected subset changed since {model_name} v{last.version}"
    return None


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    template: str  # prompt template the model answers in
    ref: str
    adapter_dir: str | None = None  # set when ``ref`` is a selectune adapter (folder or registry URI)


def load_model(ref: str, template: str = "auto", dtype: str | None = None, device: str | None = None,
               trust_remote_code: bool = False) -> LoadedModel:
    """Alias, folder or hub id; or a selectune adapter folder / ``models:/NAME/VERSION`` (base + adapter).

    ``dtype`` None: an adapter's base in the dtype it was trained with, other models as ``auto`` resolves."""
    from selectune.core import models
    from selectune.core.lora import load_adapter, read_meta
    from selectune.core.prompts import pick_template
    from selectune.core.settings import device as best_device
    from selectune.core.settings import resolve_dtype

    dev = device or best_device()
    folder = adapter_folder(ref)
    if folder is not None:
        model, tok = load_adapter(folder, dev, dtype)
        return LoadedModel(model, tok, read_meta(folder)["template"] if template == "auto" else template, ref,
                           str(folder))
    model, tok = models.load_causal_lm(ref, dtype or resolve_dtype("auto", dev), dev, trust_remote_code)
    return LoadedModel(model, tok, pick_template(template, ref, tok), ref)


def load_vllm_model(ref: str, options: Any, dtype: str = "auto", seed: int = 0,
                    trust_remote_code: bool = False) -> LoadedModel:
    """:func:`load_model` on a vLLM engine (``model`` is a :class:`selectune.core.vllm.Engine`): an adapter folder or
    registry URI is served as a LoRA adapter on the base it records. ``options``: a VLLMOptions."""
    from selectune.core.lora import read_meta
    from selectune.core.prompts import pick_template
    from selectune.core.vllm import load_engine

    folder = adapter_folder(ref)
    meta = read_meta(folder) if folder is not None else None
    engine = load_engine(meta["base"] if meta else ref, dtype, options, seed, trust_remote_code,
                         str(folder) if folder is not None else None)
    tok = engine.tokenizer()
    template = meta["template"] if meta else pick_template("auto", ref, tok)
    return LoadedModel(engine, tok, template, ref, str(folder) if folder is not None else None)
