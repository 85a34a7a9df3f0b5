"""The promote stage (``<run_dir>/promote/decision.json``): decide on the challenger from the evaluate stage's
metrics, move the ``champion`` alias when it wins, and record the decision on the model version (tags), the MLflow
run (metrics, tags) and the flow's summary. Nothing is deleted: a replaced champion keeps its version and tags."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from selectune.promotion.config import PromoteConfig
from selectune.promotion.gate import Decision, decide
from selectune.stage import StageResult, run_stage


@dataclass(frozen=True)
class PromoteOutputs:
    outcome: str  # promoted | kept | rejected
    reason: str
    challenger: str  # models:/NAME/VERSION
    champion: str  # the champion after the decision
    decision: Path  # decision.json

    @property
    def tag(self) -> str:
        """The model version tag ``selectune.promotion``: promoted | kept | rejected: <reason>."""
        return Decision(self.outcome, self.reason).tag  # type: ignore[arg-type]


def version_tags(decision: Decision, metrics: dict[str, float], eval_set_digest: str | None) -> dict[str, str]:
    """What the challenger's model version records: the decision, the comparison and its evaluation summary."""
    tags = {"selectune.promotion": decision.tag[:5000]}
    if c := decision.comparison:
        tags.update({"selectune.promotion.metric": c.metric, "selectune.promotion.improvement": f"{c.improvement:.6g}",
                     "selectune.promotion.ci": f"[{c.ci_low:.6g}, {c.ci_high:.6g}]",
                     "selectune.promotion.challenger": f"{c.challenger}", "selectune.promotion.champion":
                     f"{c.champion}"})
    for key in ("eval.loss.tuned", "eval.loss.base", "eval.winrate.tuned_vs_base", "eval.items"):
        if key in metrics:
            tags[f"selectune.{key}"] = f"{metrics[key]:.6g}"
    if eval_set_digest:
        tags["selectune.eval_set_digest"] = eval_set_digest
    return tags


def promote_stage(cfg: PromoteConfig, challenger: str, champion: int | None, metrics: dict[str, float],
                  run_dir: str | Path, parent_run_id: str | None = None,
                  eval_set_digest: str | None = None) -> StageResult[PromoteOutputs]:
    """Decide whether ``challenger`` (``models:/NAME/VERSION``) replaces ``champion`` (the version that held the
    alias when the run started; None: none yet), given the evaluate stage's ``metrics``."""
    from selectune.tracking import registry

    parts = registry.split_ref(challenger)
    if parts is None or not parts[1].isdigit():
        raise ValueError(f"promote: {challenger!r} is not a pinned registry reference models:/NAME/VERSION")
    name, version = parts[0], int(parts[1])
    relevant = {k: v for k, v in sorted(metrics.items()) if k.startswith("eval.")}
    inputs = {"challenger": challenger, "champion": str(champion), "metrics": json.dumps(relevant, sort_keys=True),
              "eval_set": eval_set_digest or ""}

    def body(out: Path) -> tuple[PromoteOutputs, dict[str, float]]:
        from mlflow.tracking import MlflowClient

        decision = decide(cfg, relevant, version, champion)
        if decision.outcome == "promoted":
            registry.set_champion(name, version)
        client = MlflowClient()
        for key, value in version_tags(decision, relevant, eval_set_digest).items():
            client.set_model_version_tag(name, str(version), key, value)
        now = registry.alias_version(name, registry.CHAMPION)
        path = out / "decision.json"
        c = decision.comparison
        path.write_text(json.dumps({"outcome": decision.outcome, "reason": decision.reason, "policy": cfg.policy,
                                    "challenger": challenger, "champion_before": champion, "champion_after": now,
                                    "comparison": c.__dict__ if c else None}, indent=2))
        if parent_run_id:
            import mlflow

            mlflow.set_tags({"selectune.promotion": decision.tag[:5000], "selectune.challenger": challenger})
        m = {"promoted": float(decision.outcome == "promoted")}
        if c:
            m.update({"promote.improvement": c.improvement, "promote.ci_low": c.ci_low, "promote.ci_high": c.ci_high})
        return PromoteOutputs(decision.outcome, decision.reason, challenger, f"models:/{name}/{now}", path), m

    return run_stage("promote", run_dir, cfg, inputs, body, PromoteOutputs, parent_run_id)
