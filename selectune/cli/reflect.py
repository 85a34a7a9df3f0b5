"""`selectune reflect`: Selective Reflection-Tuning recycling of a data file (no MLflow run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from selectune.cli.common import Dtype, OnInvalid, build, fail, field_help, load_records, option
from selectune.reflection.config import IFDConfig, ReflectionConfig, TeacherConfig

R, T, IFD = ReflectionConfig, TeacherConfig, IFDConfig


def reflect_cmd(
    input: Annotated[str, typer.Option("--input", "-i", help="Dataset (any supported format)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Recycled Parquet file (every record, with "
                                         "its variant, decision and reason)")],
    teacher: Annotated[str | None, typer.Option(help="Local alias/folder/hub id (vllm:MODEL on the vLLM engine), "
                                                "or openai:MODEL for an OpenAI-compatible endpoint; "
                                                + field_help(T, "model"))] = None,
    base_url: Annotated[str | None, option(T, "base_url")] = None,
    api_key_env: Annotated[str | None, option(T, "api_key_env")] = None,
    student: Annotated[str | None, option(IFD, "model", "--student")] = None,
    student_backend: Annotated[Literal["hf", "vllm"] | None, option(IFD, "backend", "--student-backend")] = None,
    template: Annotated[Literal["alpaca", "vicuna", "chat"] | None, option(IFD, "template")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print expected calls, tokens and cost; call "
                                          "nothing")] = False,
    max_calls: Annotated[int | None, option(T, "max_calls")] = None,
    max_cost: Annotated[float | None, option(T, "max_cost")] = None,
    prices: Annotated[str | None, typer.Option(help="USD per 1M tokens as INPUT,OUTPUT, e.g. 0.15,0.6")] = None,
    limit: Annotated[int | None, option(R, "limit")] = None,
    fidelity: Annotated[Literal["selectune", "official"] | None, option(R, "fidelity")] = None,
    temperature: Annotated[float | None, option(T, "temperature")] = None,
    max_new_tokens: Annotated[int | None, option(T, "max_new_tokens")] = None,
    batch_size: Annotated[int | None, typer.Option(help="hf teacher: prompts per generate() call; openai: requests "
                                                   "in flight (config defaults: 16 and 8)")] = None,
    ifd_max: Annotated[float | None, option(R, "ifd_max")] = None,
    rifd_max: Annotated[float | None, option(R, "rifd_max")] = None,
    keep_regardless: Annotated[bool, typer.Option("--keep-regardless", help="Ignore the thresholds")] = False,
    dtype: Annotated[Dtype | None, typer.Option(help="Teacher (hf) and student dtype (config default: auto)")] = None,
    on_invalid: Annotated[OnInvalid, typer.Option()] = "error",
) -> None:
    """Selective Reflection-Tuning: a teacher rewrites instructions and answers, the student keeps the better."""
    teacher = teacher or TeacherConfig().model
    backend, _, model = teacher.partition(":") if teacher.startswith(("openai:", "vllm:")) else ("hf", "", teacher)
    if backend == "openai" and not base_url:
        fail("an openai:MODEL teacher needs --base-url (e.g. https://api.openai.com/v1)")
    try:
        price = dict(zip(("input", "output"), [float(x) for x in prices.split(",")], strict=True)) if prices else None
    except ValueError:
        fail(f"--prices {prices!r}: expected INPUT,OUTPUT in USD per 1M tokens, e.g. 0.15,0.6")
    given = {"backend": backend, "model": model, "base_url": base_url, "api_key_env": api_key_env,
             "temperature": temperature, "max_new_tokens": max_new_tokens, "max_calls": max_calls,
             "batch_size": batch_size, "concurrency": batch_size, "max_cost": max_cost, "prices": price, "dtype": dtype}
    cfg = build(ReflectionConfig, fidelity=fidelity, limit=limit, ifd_max=ifd_max, rifd_max=rifd_max,
                keep_regardless=keep_regardless or None,
                teacher={k: v for k, v in given.items() if v is not None},
                student={k: v for k, v in {"model": student, "template": template, "dtype": dtype,
                                                   "backend": student_backend}.items()
                         if v is not None})
    df = load_records(input, on_invalid)
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
