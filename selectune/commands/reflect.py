"""`selectune reflect` and `selectune score ifd`: typer command functions (registered in selectune.cli).

    app.command("reflect")(reflect_cmd)
    score_app.command("ifd")(score_ifd_cmd)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from selectune.commands import fail

Dtype = Literal["auto", "float32", "bfloat16"]
OnInvalid = Literal["error", "skip"]


def _records(input: str, on_invalid: str, limit: int | None = None) -> Any:
    from selectune.data.readers import DataValidationError
    from selectune.data.records import load_records

    try:
        df = load_records(input, on_invalid=on_invalid).records  # type: ignore[arg-type]
    except DataValidationError as err:
        fail(str(err))
    return df.head(limit) if limit is not None else df


def reflect_cmd(
    input: Annotated[str, typer.Option("--input", "-i", help="Dataset (any supported format)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Recycled Parquet file (every record, with "
                                         "its variant, decision and reason)")],
    teacher: Annotated[str, typer.Option(help="Local alias/folder/hub id, or openai:MODEL for an "
                                         "OpenAI-compatible endpoint")] = "smollm2-135m-instruct",
    base_url: Annotated[str | None, typer.Option(help="openai: endpoint, e.g. http://127.0.0.1:8000/v1")] = None,
    api_key_env: Annotated[str, typer.Option(help="openai: environment variable holding the key")] = "OPENAI_API_KEY",
    student: Annotated[str, typer.Option(help="Student model whose IFD / r-IFD decide")] = "gemma-3-270m",
    template: Annotated[Literal["alpaca", "vicuna", "chat"], typer.Option(help="Student prompt template")] = "alpaca",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print expected calls, tokens and cost; call "
                                          "nothing")] = False,
    max_calls: Annotated[int | None, typer.Option(help="Stop after this many new teacher calls")] = None,
    max_cost: Annotated[float | None, typer.Option(help="Stop at this estimated cost (USD; needs --prices)")] = None,
    prices: Annotated[str | None, typer.Option(help="USD per 1M tokens as INPUT,OUTPUT, e.g. 0.15,0.6")] = None,
    limit: Annotated[int | None, typer.Option(help="Recycle at most N records (the rest pass through)")] = None,
    temperature: Annotated[float, typer.Option(help="Teacher sampling temperature (0 = greedy)")] = 0.7,
    max_new_tokens: Annotated[int, typer.Option(help="Max tokens per teacher reply")] = 512,
    batch_size: Annotated[int, typer.Option(help="hf teacher: prompts per generate() call (openai: requests "
                                            "in flight)")] = 16,
    ifd_max: Annotated[float, typer.Option(help="Keep the chosen pair only when IFD < this")] = 1.0,
    rifd_max: Annotated[float, typer.Option(help="Keep the chosen pair only when r-IFD < this")] = 1.0,
    keep_regardless: Annotated[bool, typer.Option("--keep-regardless", help="Ignore the thresholds")] = False,
    dtype: Annotated[Dtype, typer.Option(help="Teacher (hf) and student dtype")] = "auto",
    on_invalid: Annotated[OnInvalid, typer.Option()] = "error",
) -> None:
    """Selective Reflection-Tuning: a teacher rewrites instructions and answers, the student keeps the better."""
    from pydantic import ValidationError

    from selectune.config import ReflectionConfig

    backend, model = ("openai", teacher.removeprefix("openai:")) if teacher.startswith("openai:") else ("hf", teacher)
    if backend == "openai" and not base_url:
        fail("an openai:MODEL teacher needs --base-url (e.g. https://api.openai.com/v1)")
    try:
        price = dict(zip(("input", "output"), [float(x) for x in prices.split(",")], strict=True)) if prices else None
    except ValueError:
        fail(f"--prices {prices!r}: expected INPUT,OUTPUT in USD per 1M tokens, e.g. 0.15,0.6")
    try:
        cfg = ReflectionConfig(limit=limit, ifd_max=ifd_max, rifd_max=rifd_max, keep_regardless=keep_regardless,
                               teacher={"backend": backend, "model": model, "base_url": base_url,
                                        "api_key_env": api_key_env, "temperature": temperature,
                                        "max_new_tokens": max_new_tokens, "max_calls": max_calls,
                                        "batch_size": batch_size, "concurrency": batch_size,
                                        "max_cost": max_cost, "prices": price, "dtype": dtype},
                               student={"model": student, "template": template, "dtype": dtype})
    except ValidationError as err:
        fail(f"bad option: {err}")
    df = _records(input, on_invalid)
    if dry_run:
        from selectune.reflection.recycle import dry_run as estimate

        try:
            typer.echo(json.dumps(estimate(cfg, df), indent=2))
        except (ValueError, OSError) as err:
            fail(str(err))
        return
    from selectune.reflection.recycle import recycle, write_outputs

    try:
        res = recycle(df, cfg)
    except (ValueError, OSError, RuntimeError) as err:  # RuntimeError: the endpoint refuses (key, model, URL)
        fail(str(err))
    output.parent.mkdir(parents=True, exist_ok=True)
    outputs = write_outputs(res, output.parent, output.stem)
    m = res.metrics
    branches = ", ".join(f"{k.removeprefix('branch.')}={v:.0f}" for k, v in m.items() if k.startswith("branch.") and v)
    typer.echo(f"recycled {m['records_recycled']:.0f} of {m['records_in']:.0f} records -> {outputs['recycled']}\n"
               f"kept {m['records_out']:.0f} ({branches or 'no gated records'}); passed through: "
               f"limit {m['passthrough.limit']:.0f}, budget {m['passthrough.budget']:.0f}\n"
               f"parse failures: instruction {m['parse_fail_rate.instruction']:.1%}, response "
               f"{m['parse_fail_rate.response']:.1%}\nteacher: {m.get('teacher.calls', 0):.0f} calls, "
               f"{m.get('teacher.cached', 0):.0f} cached, {m.get('teacher.failed', 0):.0f} failed, "
               f"{m.get('teacher.tokens', 0):.0f} tokens, ${m.get('teacher.cost', 0):.4f}\n"
               f"raw teacher replies: {outputs['reflections']}")


def score_ifd_cmd(
    input: Annotated[str, typer.Option("--input", "-i", help="Dataset (any supported format)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Parquet file: records + IFD columns")],
    model: Annotated[str, typer.Option("--model", "-m", help="Student alias/folder/hub id")] = "gemma-3-270m",
    template: Annotated[Literal["alpaca", "vicuna", "chat"], typer.Option(help="Prompt template")] = "alpaca",
    max_length: Annotated[int, typer.Option(help="Token limit per sequence")] = 1024,
    batch_size: Annotated[int, typer.Option(help="Max sequences per forward pass")] = 16,
    dtype: Annotated[Dtype, typer.Option()] = "auto",
    limit: Annotated[int | None, typer.Option(help="Score only the first N records")] = None,
    on_invalid: Annotated[OnInvalid, typer.Option()] = "error",
) -> None:
    """IFD = ppl(A|Q)/ppl(A) and reversed IFD = ppl(Q|A')/ppl(Q) of every record under a student model."""
    import pandas as pd
    from pydantic import ValidationError

    from selectune.config import IFDConfig
    from selectune.data.records import write_parquet
    from selectune.reflection.ifd import ifd_scores

    try:
        cfg = IFDConfig(model=model, template=template, max_tokens=max_length, batch_size=batch_size, dtype=dtype)
    except ValidationError as err:
        fail(f"bad option: {err}")
    df = _records(input, on_invalid, limit)
    try:
        table = pd.concat([df, ifd_scores(df, cfg)], axis=1)
    except (ValueError, OSError) as err:
        fail(str(err))
    write_parquet(table, output)
    typer.echo(f"scored {len(table)} records -> {output}: median IFD {table['ifd'].median():.4f} "
               f"({(table['ifd'] >= 1).mean():.1%} >= 1), median r-IFD {table['rifd'].median():.4f}, "
               f"{int(table['ifd_truncated'].sum())} truncated")
