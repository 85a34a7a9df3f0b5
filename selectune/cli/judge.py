"""`selectune judge train|score|best-of` and `selectune answer`: the Self-J judge from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from selectune.cli.common import VLLMUrl, engine, fail, option, run_tracked
from selectune.judge.config import JudgeConfig

judge_app = typer.Typer(help="Self-J judge: train it label-free, score responses, pick the best of n.",
                        no_args_is_help=True)
Dtype = Literal["trained", "auto", "float32", "bfloat16"]
DTYPE_HELP = "Weights dtype; trained: an adapter's training dtype (auto for other models)"
JUDGE_HELP = "Judge: adapter folder, models:/NAME/VERSION, or any causal LM alias/path (untrained)"


def _read_table(path: str) -> Any:
    """Parquet, JSON Lines, JSON array or CSV into a DataFrame."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        fail(f"--input {path}: no such file")
    readers = {".parquet": pd.read_parquet, ".jsonl": lambda f: pd.read_json(f, lines=True), ".json": pd.read_json,
               ".csv": lambda f: pd.read_csv(f, keep_default_na=False)}
    if p.suffix not in readers:
        fail(f"--input {path}: unsupported extension {p.suffix!r}; use {', '.join(readers)}")
    return readers[p.suffix](p)


def _dtype(dtype: str) -> str | None:
    from selectune.core.settings import resolve_dtype

    return None if dtype == "trained" else resolve_dtype(dtype)


@judge_app.command("score")
def score_cmd(
    judge: Annotated[str, typer.Option(help=JUDGE_HELP)],
    input: Annotated[str, typer.Option("--input", "-i", help="Pairs: instruction, [input], response (or output), "
                                       "[reference]")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Parquet: the pairs plus judge_score (0-9) and "
                                         "judge_probs")],
    reference: Annotated[Literal["auto", "with", "without"], typer.Option(help="auto: with-reference scoring when "
                                                                         "a reference column exists")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Max prompts per forward pass")] = 16,
    dtype: Annotated[Dtype, typer.Option(help=DTYPE_HELP)] = "trained",
) -> None:
    """Score (instruction, response) pairs with a judge: expected value of its 0-9 rating."""
    from selectune.data.records import write_parquet
    from selectune.judge.infer import load_judge, score_pairs

    pairs = _read_table(input)
    with_ref = None if reference == "auto" else reference == "with"
    try:
        jd = load_judge(judge, _dtype(dtype))
        scored = pairs.join(score_pairs(jd, pairs, with_ref, batch_size))
    except (ValueError, OSError) as err:
        fail(str(err))
    write_parquet(scored, output)
    used_ref = "reference" in pairs.columns if with_ref is None else with_ref
    mean = round(float(scored["judge_score"].mean()), 4) if len(scored) else None
    typer.echo(json.dumps({"output": str(output), "pairs": len(scored), "with_reference": used_ref,
                           "mean_score": mean}, indent=2))


@judge_app.command("best-of")
def best_of_cmd(
    model: Annotated[str, typer.Option(help="Model that answers: alias, folder, adapter folder or models:/ URI")],
    judge: Annotated[str, typer.Option(help=JUDGE_HELP)],
    input: Annotated[str, typer.Option("--input", "-i", help="Records with instruction [, input] (any data format)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Parquet: the best response per record")],
    n: Annotated[int, typer.Option("--n", min=1, help="Responses sampled per instruction")] = 4,
    temperature: Annotated[float, typer.Option(min=0.0, help="Sampling temperature")] = 0.7,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling")] = 0.95,
    max_new_tokens: Annotated[int, typer.Option(help="Max tokens per response")] = 128,
    seed: Annotated[int, typer.Option(help="Sampling seed")] = 0,
    all_samples: Annotated[Path | None, typer.Option(help="Also write every sample with its score here")] = None,
    dtype: Annotated[Dtype, typer.Option(help=DTYPE_HELP)] = "trained",
) -> None:
    """Sample n responses per instruction and keep the one the judge scores highest."""
    from selectune.data.records import record_id, write_parquet
    from selectune.judge.infer import best_of_n, load_judge
    from selectune.tracking.registry import load_model

    records = _read_table(input)
    if "instruction" not in records.columns:
        fail(f"--input {input}: no 'instruction' column; have {list(records.columns)}")
    if "input" not in records.columns:
        records["input"] = ""
    if "id" not in records.columns:
        records["id"] = [record_id(i, x or "", "") for i, x in zip(records["instruction"], records["input"],
                                                                    strict=True)]
    try:
        best, samples = best_of_n(load_model(model, dtype=_dtype(dtype)), load_judge(judge, _dtype(dtype)), records,
                                  n, temperature, top_p, max_new_tokens, seed)
    except (ValueError, OSError) as err:
        fail(str(err))
    write_parquet(best, output)
    if all_samples is not None:
        write_parquet(samples, all_samples)
    typer.echo(json.dumps({"output": str(output), "records": len(best), "samples": len(samples),
                           "mean_best_score": round(float(best["judge_score"].mean()), 4) if len(best) else None,
                           "mean_sample_score": round(float(samples["judge_score"].mean()), 4) if len(samples)
                           else None}, indent=2))


@judge_app.command("train")
def train_cmd(
    data: Annotated[str, typer.Option("--data", "-d", help="Records with gold references (output): the held-out "
                                      "split or the selected set")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Run folder; the stage writes OUTPUT/judge/")],
    model: Annotated[str | None, typer.Option(help="Model under evaluation (default: judge.model)")] = None,
    base: Annotated[str | None, option(JudgeConfig, "base")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML: a pipeline recipe (its judge: section) or JudgeConfig "
                                                "fields")] = None,
    n_samples: Annotated[int | None, typer.Option(help="Responses sampled per instruction")] = None,
    backend: Annotated[Literal["hf", "vllm"] | None, option(JudgeConfig, "backend")] = None,
    vllm_url: VLLMUrl = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop training after N optimizer steps")] = None,
    register_as: Annotated[str | None, typer.Option(help="Model Registry name ('' skips registration)")] = None,
    experiment: Annotated[str, typer.Option(help="MLflow experiment")] = "selectune",
) -> None:
    """Label sampled responses, train the judge, evaluate it on held-out instructions, register it."""
    import yaml
    from pydantic import ValidationError

    from selectune.core.settings import disable_telemetry
    from selectune.judge.config import JudgeConfig

    disable_telemetry()
    try:
        from selectune.core.config import load_stage_config

        cfg = load_stage_config(JudgeConfig, "judge", config, model=model, base=base, n_samples=n_samples,
                                **engine(backend, vllm_url), max_steps=max_steps, register_as=register_as)
    except (ValidationError, OSError, yaml.YAMLError) as err:
        fail(f"{config}: {err}")
    from selectune.judge.stage import judge_stage

    run_tracked("judge", data, output, experiment, lambda out, run_id: judge_stage(cfg, data, out, run_id))


def answer_cmd(
    instruction: Annotated[str, typer.Argument(help="The instruction to follow")],
    model: Annotated[str, typer.Option(help="Model that answers: alias, folder, adapter folder or models:/ URI")],
    judge: Annotated[str, typer.Option(help=JUDGE_HELP)],
    threshold: Annotated[float, typer.Option(help="Decline when the judge score (0-9) is below this")] = 5.0,
    input: Annotated[str, typer.Option("--input", help="Optional input / context for the instruction")] = "",
    max_new_tokens: Annotated[int, typer.Option(help="Max answer tokens")] = 256,
    as_json: Annotated[bool, typer.Option("--json", help="Print answer, score and decision as JSON")] = False,
    dtype: Annotated[Dtype, typer.Option(help=DTYPE_HELP)] = "trained",
) -> None:
    """Selective instruction following: answer, or decline when the judge expects a poor answer."""
    from selectune.judge.infer import answer, load_judge
    from selectune.tracking.registry import load_model

    try:
        res = answer(load_model(model, dtype=_dtype(dtype)), load_judge(judge, _dtype(dtype)), [instruction],
                     [input], threshold, max_new_tokens)[0]
    except (ValueError, OSError) as err:
        fail(str(err))
    typer.echo(json.dumps(res, indent=2) if as_json else f"{res['answer']}\n\n[judge score {res['score']:.2f}]")
