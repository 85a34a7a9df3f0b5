"""The pipeline's config: every stage's config together (a YAML recipe, the Prefect form), the scale-out settings,
and the readers of recipes. Each stage's own config lives in its subpackage (``selectune/<stage>/config.py``) and
is importable from here too."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import yaml
from pydantic import Field

from selectune.core.config import Config, resolve_paths
from selectune.data.config import DataConfig
from selectune.evaluation.config import EvalConfig, EvalSetConfig
from selectune.judge.config import JudgeConfig
from selectune.promotion.config import PromoteConfig
from selectune.reflection.config import IFDConfig, IFDScoringConfig, ReflectionConfig, TeacherConfig
from selectune.selection.config import SelectionConfig
from selectune.selectit.config import SelectITConfig
from selectune.tuning.config import TuneConfig

__all__ = ["DataConfig", "EvalConfig", "EvalSetConfig", "IFDConfig", "IFDScoringConfig", "JudgeConfig",
           "PipelineConfig", "PromoteConfig", "ReflectionConfig", "ScaleConfig", "SelectITConfig", "SelectionConfig",
           "TeacherConfig", "TuneConfig", "load_config"]


class ScaleConfig(Config):
    """Sharded execution of per-record model work on a distributed engine."""

    runner: Literal["local", "dask", "ray"] = Field("local", description="local: one process; dask: "
                                                    "DaskTaskRunner; ray: RayTaskRunner")
    address: str | None = Field(None, description="Scheduler address (tcp://host:8786 / ray://host:10001); "
                                "default: start a local cluster on 127.0.0.1")
    n_workers: int = Field(2, ge=1, description="Local cluster: worker processes")
    threads_per_worker: int = Field(1, ge=1, description="Local Dask cluster: threads per worker")
    shards: int | None = Field(None, ge=1, description="Number of shards, balanced by record length in "
                               "characters (a tokenizer-free token-count proxy); default 2 x workers")
    gpus_per_shard: float = Field(0.0, ge=0, description="GPUs each shard needs (Dask worker resources / "
                                  "Ray num_gpus)")


class PipelineConfig(Config):
    """A whole curation run: where it writes, how it is tracked, and each stage's config."""

    paths: ClassVar[tuple[str, ...]] = ("run_dir",)
    run_dir: str | None = Field(None, description="Stage outputs go to <run_dir>/<stage>/; default "
                                "runs/<timestamp>")
    experiment: str = Field("selectune", description="MLflow experiment name")
    data: DataConfig = Field(default_factory=DataConfig)
    selectit: SelectITConfig = Field(default_factory=SelectITConfig)
    ifd: IFDScoringConfig = Field(default_factory=IFDScoringConfig)
    reflection: ReflectionConfig = Field(default_factory=ReflectionConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    promote: PromoteConfig = Field(default_factory=PromoteConfig)
    scale: ScaleConfig = Field(default_factory=ScaleConfig)


def load_config(path: str | Path | None, backend: str | None = None, vllm: dict | None = None) -> PipelineConfig:
    """Read a YAML recipe into a validated PipelineConfig (no file = defaults); ``backend`` (hf, vllm) replaces
    the engine of every local model: the raters, the IFD students, a local teacher, the judge's sampling, the
    evaluation's greedy answers; ``vllm`` (options such as a server's ``base_url``) is merged into each of them."""
    raw = (yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}) if path is not None else {}
    if backend is not None:
        raw = with_backend(raw, backend, vllm)
    if path is None:
        return PipelineConfig.model_validate(raw)
    return PipelineConfig.model_validate(resolve_paths(PipelineConfig, raw, Path(path).resolve().parent))


def with_backend(raw: dict, backend: str, vllm: dict | None = None) -> dict:
    """A recipe mapping with ``backend`` set (and ``vllm`` merged) in every section that runs a local model (an
    OpenAI-compatible teacher stays remote)."""

    def engine(section: dict | None) -> dict:
        out = {**(section or {}), "backend": backend}
        if vllm:
            out["vllm"] = {**(out.get("vllm") or {}), **vllm}
        return out

    out = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for section in ("selectit", "ifd", "judge", "eval"):
        out[section] = engine(out.get(section))
    reflection = dict(out.get("reflection") or {})
    reflection["student"] = engine(reflection.get("student"))
    teacher = dict(reflection.get("teacher") or {})
    if teacher.get("backend", "hf") != "openai":
        reflection["teacher"] = engine(teacher)
    out["reflection"] = reflection
    return out
