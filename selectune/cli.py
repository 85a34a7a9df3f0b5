"""The `selectune` command line. Heavy imports happen inside commands so `--help` is instant."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from selectune.commands import fail
from selectune.core.settings import disable_telemetry

app = typer.Typer(help="Curate instruction-tuning data with the LLM itself, then train on it.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
models_app = typer.Typer(help="Embedded default models.", no_args_is_help=True)
data_app = typer.Typer(help="Instruction data checks.", no_args_is_help=True)
score_app = typer.Typer(help="Score records.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(data_app, name="data")
app.add_typer(score_app, name="score")

OnInvalid = Literal["error", "skip"]


@models_app.command("list")
def models_list() -> None:
    """Aliases, sources, sizes, parameter counts and whether each is cached."""
    from selectune.core.models import list_models

    rows = list_models()
    typer.echo(f"{'alias':24} {'kind':16} {'source':32} {'cached':7} {'size MB':>8} {'params':>12}")
    for r in rows:
        params = f"{r['parameters']:,}" if r["parameters"] else "-"
        typer.echo(f"{r['alias']:24} {r['kind']:16} {r['source']:32} {'yes' if r['cached'] else 'no':7} "
                   f"{r['size_mb']:>8} {params:>12}")


@models_app.command("pull")
def models_pull(alias: str) -> None:
    """Prepare an alias: convert its GGUF once to safetensors under $SELECTUNE_HOME/models/."""
    from selectune.core.models import ALIASES, prepare

    if alias not in ALIASES:
        fail(f"unknown alias {alias!r}; known: {', '.join(ALIASES)}")
    typer.echo(f"{alias}: {prepare(alias)}")


@data_app.command("validate")
def data_validate(input: Annotated[str, typer.Option("--input", "-i", help="Dataset file or folder")],
                  on_invalid: Annotated[OnInvalid, typer.Option(help="error: stop at the first bad row; skip: "
                                                                "write rejected rows to a side file")] = "error",
                  format: Annotated[str | None, typer.Option(help="Override the detected format")] = None) -> None:
    """Run the dataset checks and print a summary (exit 2 on errors in the default mode)."""
    from selectune.data.readers import DataValidationError
    from selectune.data.records import load_records, write_rejections

    try:
        res = load_records(input, fmt=format, on_invalid=on_invalid)
    except DataValidationError as err:
        fail(str(err))
    summary = res.summary()
    if res.rejected:
        local = Path(input)  # a hub id's side file goes to the working directory
        folder = local.parent if local.exists() else Path.cwd()
        side = folder / (local.name.replace(":", "_") + ".rejected.jsonl")
        summary["rejected_file"] = str(write_rejections(res.rejected, side))
    typer.echo(json.dumps(summary, indent=2))


@score_app.command("selectit")
def score_selectit_cmd(
    input: Annotated[str, typer.Option("--input", "-i", help="Dataset (any supported format)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Scored Parquet file")],
    model: Annotated[list[str], typer.Option("--model", "-m", help="Rater alias/path/hub id; repeat")] = None,
    weights: Annotated[str | None, typer.Option(help="Comma-separated model weights (default: by size)")] = None,
    normalization: Annotated[Literal["paper", "official"], typer.Option()] = "paper",
    layout: Annotated[Literal["official", "chat"], typer.Option()] = "official",
    rating_prompts: Annotated[str | None, typer.Option(help="File with one rating prompt per line")] = None,
    dtype: Annotated[Literal["auto", "float32", "bfloat16"], typer.Option()] = "auto",
    k: Annotated[int, typer.Option(help="Rating scale 1..K")] = 5,
    alpha: Annotated[float, typer.Option(help="Sentence-level std penalty")] = 0.2,
    batch_size: Annotated[int, typer.Option()] = 16,
    max_length: Annotated[int, typer.Option()] = 1024,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Bypass the rating cache")] = False,
    on_invalid: Annotated[OnInvalid, typer.Option()] = "error",
    limit: Annotated[int | None, typer.Option(help="Score only the first N records")] = None,
) -> None:
    """SelectIT scores (token, sentence and model level) for every record."""
    from selectune.config import SelectITConfig
    from selectune.core.metrics import label_auroc
    from selectune.data.readers import DataValidationError
    from selectune.data.records import load_records, write_parquet, write_rejections
    from selectune.selectit.rater import rating_cache, score_selectit

    try:
        cfg = SelectITConfig(models=model or SelectITConfig().models, rating_scale=k, std_penalty=alpha, dtype=dtype,
                             weights=[float(w) for w in weights.split(",")] if weights else None,
                             normalization=normalization, layout=layout, rating_prompts_file=rating_prompts,
                             batch_size=batch_size, max_tokens=max_length, use_cache=not no_cache)
        res = load_records(input, on_invalid=on_invalid)
    except (ValueError, DataValidationError) as err:
        fail(str(err))
    df = res.records.head(limit) if limit is not None else res.records
    if res.rejected:
        typer.echo(f"rejected rows: {len(res.rejected)} -> "
                   f"{write_rejections(res.rejected, output.with_name(output.stem + '.rejected.jsonl'))}")
    cache = rating_cache() if cfg.use_cache else None
    try:
        report = score_selectit(df, cfg, cache)
    except (ValueError, OSError) as err:
        fail(str(err))
    write_parquet(report.table, output)
    m = report.metrics()
    auroc = label_auroc(report.table, "selectit_score")
    tail = f"; AUROC vs labels {auroc:.3f}" if auroc is not None else ""
    typer.echo(f"scored {len(df)} records -> {output} (cache hits {m['cache_hits']:.0f}, computed "
               f"{m['ratings_computed']:.0f} ratings){tail}")


@app.command("select")
def select_cmd(
    input: Annotated[str, typer.Option("--input", "-i", help="Scored Parquet file")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder")],
    strategy: Annotated[Literal["top", "combined", "random", "full"], typer.Option()] = "top",
    by: Annotated[str, typer.Option(help="Score column (strategy top)")] = "selectit_score",
    weight: Annotated[list[str] | None, typer.Option(help="combined: COLUMN=WEIGHT; repeat (negative: lower "
                                                      "is better)")] = None,
    fraction: Annotated[float | None, typer.Option(help="Top fraction (default 0.2)")] = None,
    k: Annotated[int | None, typer.Option(help="Top k")] = None,
    threshold: Annotated[float | None, typer.Option(help="Keep scores >= threshold")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random baseline")] = 0,
    min_length: Annotated[int | None, typer.Option(help="Min response characters")] = None,
    max_length: Annotated[int | None, typer.Option(help="Max response characters")] = None,
    quota: Annotated[list[str] | None, typer.Option(help="CATEGORY=N (count) or CATEGORY=0.3 (fraction of the "
                                                     "budget); repeat")] = None,
    diversity: Annotated[float | None, typer.Option(help="Max cosine similarity to an accepted record")] = None,
    judge: Annotated[str | None, typer.Option(help="Add judge_score from this Self-J judge (folder or "
                                              "models:/NAME/VERSION) before selecting")] = None,
) -> None:
    """Select a subset; writes selection.parquet (every record, its decision and reason), selected.parquet and
    selected_alpaca.json."""
    import pandas as pd
    from pydantic import ValidationError

    from selectune.config import SelectionConfig
    from selectune.data.records import export_alpaca, write_parquet
    from selectune.selection.select import select_records

    def pairs(items: list[str] | None) -> dict[str, float] | None:
        if not items:
            return None
        try:
            return {key: float(value) for key, value in (item.rsplit("=", 1) for item in items)}
        except ValueError:
            fail(f"expected NAME=NUMBER, got {items}")

    try:
        cfg = SelectionConfig(strategy=strategy, by=by, weights=pairs(weight), seed=seed, top_k=k, threshold=threshold,
                              fraction=fraction if fraction is not None else 0.2, min_chars=min_length,
                              max_chars=max_length, quotas=pairs(quota), diversity_threshold=diversity,
                              judge=judge)
        df = pd.read_parquet(input)
        if cfg.judge:
            from selectune.selection.stage import judge_records

            df = judge_records(df, cfg.judge)[0]
        embeddings = None
        if cfg.diversity_threshold is not None:
            from selectune.selection.diversity import embed_records

            embeddings = embed_records(df, cfg.embedder).vectors
        res = select_records(df, cfg, embeddings)
    except (ValidationError, ValueError, OSError) as err:  # pyarrow's ArrowInvalid is a ValueError
        fail(str(err))
    output.mkdir(parents=True, exist_ok=True)
    write_parquet(res.table, output / "selection.parquet")
    write_parquet(res.selected, output / "selected.parquet")
    export_alpaca(res.selected, output / "selected_alpaca.json")
    typer.echo(f"selected {len(res.selected)} of {len(res.table)} records -> {output}")
    typer.echo(res.table["decision"].value_counts().to_string())


@app.command("run")
def run_cmd(config: Annotated[Path | None, typer.Option(help="YAML recipe (PipelineConfig)")] = None,
            limit: Annotated[int | None, typer.Option(help="Only the first N records")] = None,
            run_dir: Annotated[str | None, typer.Option(help="Output folder for this run")] = None) -> None:
    """Run the curation flow (Prefect; no server needed) and print where outputs and MLflow runs are."""
    disable_telemetry()
    import yaml
    from pydantic import ValidationError

    from selectune.config import load_config

    try:
        cfg = load_config(config)
    except (ValidationError, OSError, yaml.YAMLError) as err:
        fail(f"{config}: {err}")
    if limit is not None:
        cfg.data.limit = limit
    if run_dir is not None:
        cfg.run_dir = run_dir
    from flows.curate import run_pipeline

    summary = run_pipeline(cfg)
    typer.echo(json.dumps(summary, indent=2, default=str))
    uri = summary["mlflow_tracking_uri"]
    typer.echo(f"\noutputs: {summary['run_dir']}\nMLflow run {summary['mlflow_run_id']} in {uri}\n"
               f"browse: mlflow ui --backend-store-uri {uri}")


@app.command("compare")
def compare_cmd(run_ids: Annotated[list[str] | None, typer.Argument(help="MLflow parent run ids")] = None,
                experiment: Annotated[str | None, typer.Option(help="Every pipeline run of this experiment")] = None,
                html: Annotated[Path, typer.Option(help="HTML report with plots")] = Path("compare.html")) -> None:
    """Pipeline runs side by side (strategy, subset, scorers, held-out loss, judge, time, teacher cost)."""
    disable_telemetry()
    from selectune.tracking.compare import collect, html_report, text_table

    try:
        df = collect(run_ids, experiment)
    except Exception as err:  # unknown run id / experiment, unreachable server
        fail(str(err))
    if df.empty:
        fail("no pipeline runs found")
    typer.echo(text_table(df))
    typer.echo(f"\nreport: {html_report(df, html, experiment or 'selectune runs')}")


def _register_stage_commands() -> None:
    """Stage commands live in selectune/commands/ (one module per stage); their imports stay lazy."""
    from selectune.commands.judge import answer_cmd, judge_app
    from selectune.commands.reflect import reflect_cmd, score_ifd_cmd
    from selectune.commands.tune import tune_cmd

    app.command("reflect")(reflect_cmd)
    score_app.command("ifd")(score_ifd_cmd)
    app.command("tune")(tune_cmd)
    app.add_typer(judge_app, name="judge")
    app.command("answer")(answer_cmd)


_register_stage_commands()


def main() -> None:
    sys.exit(app())
