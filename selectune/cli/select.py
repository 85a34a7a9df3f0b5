"""`selectune select`: choose a subset of a scored file (no MLflow run; the pipeline's select stage does the same)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from selectune.cli.common import build, fail, option
from selectune.selection.config import SelectionConfig

C = SelectionConfig


def _pairs(items: list[str] | None) -> dict[str, float] | None:
    """NAME=NUMBER items as a dict."""
    if not items:
        return None
    try:
        return {key: float(value) for key, value in (item.rsplit("=", 1) for item in items)}
    except ValueError:
        fail(f"expected NAME=NUMBER, got {items}")


def select_cmd(
    input: Annotated[str, typer.Option("--input", "-i", help="Scored Parquet file")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder")],
    strategy: Annotated[Literal["top", "combined", "random", "full"] | None, option(C, "strategy")] = None,
    by: Annotated[str | None, option(C, "by")] = None,
    weight: Annotated[list[str] | None, typer.Option(help="combined: COLUMN=WEIGHT; repeat (negative: lower "
                                                      "is better)")] = None,
    fraction: Annotated[float | None, option(C, "fraction")] = None,
    top_k: Annotated[int | None, option(C, "top_k", "--top-k", "--k")] = None,
    threshold: Annotated[float | None, option(C, "threshold")] = None,
    seed: Annotated[int | None, option(C, "seed")] = None,
    min_chars: Annotated[int | None, option(C, "min_chars", "--min-chars", "--min-length")] = None,
    max_chars: Annotated[int | None, option(C, "max_chars", "--max-chars", "--max-length")] = None,
    quota: Annotated[list[str] | None, typer.Option(help="CATEGORY=N (count) or CATEGORY=0.3 (fraction of the "
                                                     "budget); repeat")] = None,
    diversity: Annotated[float | None, option(C, "diversity_threshold", "--diversity")] = None,
    judge: Annotated[str | None, option(C, "judge")] = None,
) -> None:
    """Select a subset; writes selection.parquet (every record, its decision and reason), selected.parquet and
    selected_alpaca.json."""
    from selectune.selection.stage import select_file

    cfg = build(SelectionConfig, strategy=strategy, by=by, weights=_pairs(weight), fraction=fraction, top_k=top_k,
                threshold=threshold, seed=seed, min_chars=min_chars, max_chars=max_chars, quotas=_pairs(quota),
                diversity_threshold=diversity, judge=judge)
    output.mkdir(parents=True, exist_ok=True)
    try:
        res, _, _ = select_file(cfg, input, output, cfg.judge)
    except (ValueError, OSError) as err:  # pyarrow's ArrowInvalid is a ValueError
        fail(str(err))
    typer.echo(f"selected {len(res.selected)} of {len(res.table)} records -> {output}")
    typer.echo(res.table["decision"].value_counts().to_string())
