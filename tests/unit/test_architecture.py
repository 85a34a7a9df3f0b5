"""The import rules of docs/architecture.md, read from the source with ``ast`` (imports inside functions included).

Layers, bottom to top: core -> tracking -> stage (the runner) -> the stage subpackages -> config / decisions ->
tasks -> flows -> cli / deployments. A module may import its own layer and the layers below, never above; only
``selectune/cli/`` (and tasks/, flows/, deployments/) may import Prefect; no stage subpackage imports another's
private names; algorithm modules never import a stage runner.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures import ROOT

STAGES = ("data", "selectit", "reflection", "selection", "tuning", "judge", "evaluation", "promotion")
RANK = {"core": 0, "tracking": 1, "stage": 2, **dict.fromkeys(STAGES, 3), "config": 4, "decisions": 4, "experiment": 4,
        "tasks": 5, "flows": 6, "cli": 7, "deployments": 7}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str | None:
    """The layer of a first-party module name (None for selectune/__init__ and third-party modules)."""
    parts = module.split(".")
    if parts[0] in ("tasks", "flows", "deployments"):
        return parts[0]
    if parts[0] != "selectune" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in RANK else None


def sources() -> list[Path]:
    return sorted(p for d in ("selectune", "tasks", "flows", "deployments") for p in (ROOT / d).rglob("*.py"))


def imports(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """(line, imported module, imported names) of every import statement in a file."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.lineno, node.module, [a.name for a in node.names]


def violations(path: Path) -> list[str]:
    """Every broken rule in one file, as 'file:line: what'."""
    here = module_name(path)
    own = layer(here)
    where = str(path.relative_to(ROOT))
    out = []
    for line, target, names in imports(path):
        if target.split(".")[0] == "prefect" and own not in ("cli", "tasks", "flows", "deployments"):
            out.append(f"{where}:{line}: imports prefect outside selectune/cli/")
        for full in [target] + [f"{target}.{n}" for n in names]:
            theirs = layer(full)
            if theirs is not None:
                break
        if theirs is None or own is None:
            continue
        if RANK[theirs] > RANK[own]:
            out.append(f"{where}:{line}: {own} imports {target} from the higher layer {theirs}")
        if own in STAGES and theirs in STAGES and theirs != own and any(n.startswith("_") for n in names):
            out.append(f"{where}:{line}: imports private names {names} of the {theirs} stage")
        runner = target == "selectune.stage" or target.endswith(".stage") and theirs in STAGES
        if own in STAGES and here.split(".")[-1] not in ("stage",) and runner:
            out.append(f"{where}:{line}: the algorithm module {here} imports a stage runner ({target})")
    return out


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_import_rules(path: Path) -> None:
    assert violations(path) == []


def test_the_rules_catch_what_they_forbid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checker itself: each rule fires on a file that breaks it (a test that cannot fail is no test)."""
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    bad = {
        "selectune/core/x.py": "from selectune.selectit import rater\n",  # core imports a stage
        "selectune/data/y.py": "def f():\n    import prefect\n",  # prefect inside the library, in a function
        "selectune/judge/z.py": "from selectune.selection.select import _walk\n",  # another stage's private name
        "selectune/tuning/train2.py": "from selectune.tuning.stage import tune_stage\n",  # algorithm -> runner
        "tasks/t.py": "from flows.curate import curate\n",  # tasks import flows
        "selectune/tracking/w.py": "from selectune import config\n",  # tracking imports the pipeline config
    }
    for rel, text in bad.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    found = {rel: violations(tmp_path / rel) for rel in bad}
    assert all(found.values()), found
    ok = tmp_path / "selectune" / "cli" / "ok.py"
    ok.parent.mkdir(parents=True)
    ok.write_text("import prefect\nfrom flows.curate import curate\nfrom selectune.judge.stage import judge_stage\n")
    assert violations(ok) == []


def test_only_the_cli_imports_prefect_in_the_library() -> None:
    users = {str(p.relative_to(ROOT)) for p in (ROOT / "selectune").rglob("*.py")
             if any(t.split(".")[0] == "prefect" for _, t, _ in imports(p))}
    assert all(u.startswith("selectune/cli/") for u in users), users
