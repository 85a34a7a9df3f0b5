"""Every config field that can change a stage's outputs is in the stage's key, and only the fields declared
``runtime`` (how fast or where the work runs) are left out: changing one field at a time changes the key exactly
when the field is not runtime."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from selectune.config import (
    DataConfig,
    EvalConfig,
    EvalSetConfig,
    IFDScoringConfig,
    JudgeConfig,
    PromoteConfig,
    ReflectionConfig,
    SelectionConfig,
    SelectITConfig,
    TuneConfig,
)
from selectune.reflection.prompts import builtin_file as reflection_prompt
from selectune.stage import stage_key

STAGE_CONFIGS = (DataConfig, EvalSetConfig, EvalConfig, IFDScoringConfig, JudgeConfig, PromoteConfig, ReflectionConfig,
                 SelectionConfig, SelectITConfig, TuneConfig)
VLLM = {f"vllm.{f}" for f in ("gpu_memory_utilization", "max_num_seqs", "tensor_parallel_size", "top_logprobs",
                               "base_url", "served_model", "api_key_env", "concurrency", "prompts_per_request",
                               "timeout_s")}
SCORING = {"batch_size", "max_batch_tokens", "attn_implementation", *VLLM}
TRAINING = {"save_steps", "gradient_checkpointing"}
# The reviewed list of fields that cannot change what a stage writes (speed, transport, secrets' names, whether the
# stage runs at all). Declaring another field ``runtime`` in a config needs the same change here.
RUNTIME: dict[str, set[str]] = {
    "DataConfig": set(), "EvalSetConfig": set(), "SelectionConfig": set(), "PromoteConfig": {"enabled"},
    "EvalConfig": VLLM | {"enabled", "batch_size", "judge_api_key_env", "judge_api_key_secret"},
    "SelectITConfig": SCORING | {"use_cache"},
    "IFDScoringConfig": SCORING | {"enabled", "use_cache"},
    "ReflectionConfig": {"enabled", "trace_calls", *(f"student.{f}" for f in SCORING),
                         *(f"teacher.{f}" for f in ("batch_size", "concurrency", "timeout_s", "max_retries",
                                                    "api_key_env", "api_key_secret", *VLLM))},
    "TuneConfig": TRAINING | {"enabled"},
    "JudgeConfig": TRAINING | VLLM | {"enabled", "score_batch_size", "max_batch_tokens"},
}
# values the generic rule below cannot make valid on its own
SPECIAL: dict[str, Any] = {
    "SelectITConfig.weights": [1.0, 2.0],
    "SelectITConfig.fidelity": "official",
    "ReflectionConfig.prompts.reflect_instruction": str(reflection_prompt("instruction")),
    "ReflectionConfig.prompts.reflect_response": str(reflection_prompt("response")),
    "JudgeConfig.prompts.with_reference": lambda tmp: _file(tmp / "with.j2", "{% macro prompt(question, answer, "
                                                            "reference) %}{{ question }} {{ answer }} {{ reference }}"
                                                            "{% endmacro %}"),
    "JudgeConfig.prompts.without_reference": lambda tmp: _file(tmp / "free.j2", "{% macro prompt(question, answer) %}"
                                                               "{{ question }} {{ answer }}{% endmacro %}"),
    "SelectionConfig.quotas": {"a": 0.5, "b": 0.5},
    "SelectionConfig.weights": {"selectit": 1.0, "ifd": -1.0},
    **{f"{owner}.vllm.base_url": "http://127.0.0.1:8000/v1" for owner in (
        "SelectITConfig", "IFDScoringConfig", "ReflectionConfig.student", "ReflectionConfig.teacher", "JudgeConfig",
        "EvalConfig")},
}


def _file(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def leaves(cls: type[BaseModel], prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted field path, annotation) of every field, nested configs expanded."""
    out = []
    for name, field in cls.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            out += leaves(sub, f"{prefix}{name}.")
        else:
            out.append((f"{prefix}{name}", sub))
    return out


def other_values(annotation: Any, default: Any) -> list[Any]:
    """Candidate values of ``annotation`` different from ``default`` (the first one the config accepts is used)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return [a for a in args if a != default]
    if default is None:
        inner = args[0] if args else annotation
        origin = typing.get_origin(inner)
        if origin in (list, dict):
            return [["q_proj"] if origin is list else {"input": 1.0, "output": 2.0}]
        return {int: [1, 1024], float: [0.5, 1.5], str: ["changed"], bool: [True]}.get(inner) \
            or other_values(inner, None)
    if isinstance(default, bool):
        return [not default]
    if isinstance(default, int):
        return [default + 1, default - 1]
    if isinstance(default, float):
        return [default / 2, (default + 1) / 2, default * 1.05, default + 1] if default else [0.5]
    if isinstance(default, str):
        return [default + "-changed" if default else "changed"]
    if isinstance(default, list):
        return [[*default, "changed"]]
    raise TypeError(f"no rule for {annotation!r} = {default!r}")


def changed(cls: type[BaseModel], path: str, tmp: Path) -> BaseModel:
    """``cls`` with the field at ``path`` (dotted) set to a valid value other than its default."""
    from pydantic import ValidationError

    annotation = dict(leaves(cls))[path]
    default: Any = cls()
    for part in path.split("."):
        default = getattr(default, part)
    special = SPECIAL.get(f"{cls.__name__}.{path}")
    candidates = [special(tmp) if callable(special) else special] if special is not None \
        else other_values(annotation, default)
    *parents, last = path.split(".")
    for value in candidates:
        data: dict[str, Any] = {}
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            error = err
    raise error


def runtime_paths(cls: type[BaseModel], prefix: str = "") -> set[str]:
    out = {f"{prefix}{n}" for n in getattr(cls, "runtime", ())}
    for name, field in cls.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out |= runtime_paths(field.annotation, f"{prefix}{name}.")
    return out


@pytest.fixture(autouse=True)
def _vllm_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    """``backend: vllm`` validates as on a GPU machine: its key is what is tested here, not this machine."""
    from selectune.core import vllm

    monkeypatch.setattr(vllm, "unavailable", lambda: None)


CASES = [(cls, path) for cls in STAGE_CONFIGS for path, _ in leaves(cls) if path not in ("renamed",)]


@pytest.mark.parametrize(("cls", "path"), CASES, ids=[f"{c.__name__}.{p}" for c, p in CASES])
def test_a_field_changes_the_stage_key_unless_it_is_runtime(cls: type[BaseModel], path: str, tmp_path: Path) -> None:
    inputs = {"records": "0123456789abcdef"}
    before, after = cls(), changed(cls, path, tmp_path)
    assert after.model_dump() != before.model_dump(), f"{path}: the test's new value equals the default"
    differs = stage_key(after, inputs) != stage_key(before, inputs)
    assert differs == (path not in RUNTIME[cls.__name__]), (
        f"{cls.__name__}.{path}: " + ("declared runtime but changes the key" if differs else
                                       "changes the stage's outputs but is not in its key"))


@pytest.mark.parametrize("cls", STAGE_CONFIGS, ids=lambda c: c.__name__)
def test_runtime_fields_are_the_reviewed_ones_and_inputs_change_the_key(cls: type[BaseModel]) -> None:
    assert runtime_paths(cls) == RUNTIME[cls.__name__]
    assert stage_key(cls(), {"records": "a"}) != stage_key(cls(), {"records": "b"})
    assert stage_key(cls(), {"records": "a"}) != stage_key(cls(), {"records": "a", "model.x": "f"})
