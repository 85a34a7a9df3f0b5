"""`selectune score selectit|ifd`: quick single-stage scoring that writes a Parquet file (no MLflow run)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Literal

import typer

from selectune.cli.common import Dtype, OnInvalid, VLLMUrl, build, engine, fail, option
from selectune.reflection.config import IFDConfig
from selectune.selectit.config import SelectITConfig

score_app = typer.Typer(help="Score records.", no_args_is_help=True)
S, IFD = SelectITConfig, IFDConfig


@contextmanager
def streamed_records(input: str, output: Path, on_invalid: OnInvalid, limit: int | None) -> Iterator[Path]:
    """``input`` validated and deduped into a temporary Parquet file beside ``output``, a chunk at a time (memory
    stays flat); rejected rows (``--on-invalid skip``) go to ``<output>.rejected.jsonl``."""
    import tempfile

    from selectune.data.readers import DataValidationError
    from selectune.data.records import write_rejections
    from selectune.data.stream import write_records

    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}.records-") as tmp:
        records = Path(tmp) / "records.parquet"
        try:
            scan = write_records(input, records, on_invalid=on_invalid, limit=limit)
        except DataValidationError as err:
            fail(str(err))
        if scan.rejected:
            side = write_rejections(scan.rejected, output.with_name(output.stem + ".rejected.jsonl"))
            typer.echo(f"rejected rows: {len(scan.rejected)} -> {side}")
        yield records


@score_app.command("selectit")
def score_selectit_cmd(
    input: Annotated[str, typer.Option("--input", "-i", help="Dataset (any supported format)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Scored Parquet file")],
    model: Annotated[list[str] | None, option(S, "models", "--model", "-m")] = None,
    fidelity: Annotated[Literal["selectune", "official"] | None, option(S, "fidelity")] = None,
    num_prompts: Annotated[int | None, option(S, "num_prompts", "--num-prompts")] = None,
    sentence_level: Annotated[bool | None, option(S, "sentence_level", "--sentence-level/--token-level")] = None,
    weights: Annotated[str | None, typer.Option(help="Comma-separated model weights (default: by size)")] = None,
    normalization: Annotated[Literal["paper", "official"] | None, option(S, "normalization")] = None,
    layout: Annotated[Literal["official", "chat"] | None, option(S, "layout")] = None,
    rating_prompts: Annotated[str | None, option(S, "rating_prompts_file", "--rating-prompts")] = None,
    dtype: Annotated[Dtype | None, option(S, "dtype")] = None,
    backend: Annotated[Literal["hf", "vllm"] | None, option(S, "backend")] = None,
    vllm_url: VLLMUrl = None,
    rating_scale: Annotated[int | None, option(S, "rating_scale", "--rating-scale", "--k")] = None,
    std_penalty: Annotated[float | None, option(S, "std_penalty", "--std-penalty", "--alpha")] = None,
    batch_size: Annotated[int | None, option(S, "batch_size")] = None,
    max_tokens: Annotated[int | None, option(S, "max_tokens", "--max-tokens", "--max-length")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Bypass the rating cache")] = False,
    on_invalid: Annotated[OnInvalid, typer.Option()] = "error",
    limit: Annotated[int | None, typer.Option(help="Score only the first N records")] = None,
) -> None:
    """SelectIT scores (token, sentence and model level) for every record, a chunk of records at a time."""
    from selectune.core.metrics import label_auroc
    from selectune.data.stream import read_columns
    from selectune.selectit.chunks import score_file
    from selectune.selectit.rater import open_rating_cache

    try:
        parsed = [float(w) for w in weights.split(",")] if weights else None
    except ValueError:
        fail(f"--weights {weights!r}: expected comma-separated numbers, e.g. 2,1")
    cfg = build(SelectITConfig, models=model or None, fidelity=fidelity, num_prompts=num_prompts,
                sentence_level=sentence_level, weights=parsed, normalization=normalization, layout=layout,
                rating_prompts_file=rating_prompts, dtype=dtype, **engine(backend, vllm_url), rating_scale=rating_scale,
                std_penalty=std_penalty, batch_size=batch_size, max_tokens=max_tokens,
                use_cache=False if no_cache else None)
    with streamed_records(input, output, on_invalid, limit) as records:
        with open_rating_cache(cfg) as cache:
            try:
                report = score_file(records, output, cfg, cache)
            except (ValueError, OSError) as err:
                fail(str(err))
    m = report.metrics()
    auroc = label_auroc(read_columns(output, ["selectit_score", "label"]), "selectit_score")
    tail = f"; AUROC vs labels {auroc:.3f}" if auroc is not None else ""
    typer.echo(f"scored {report.records} records -> {output} (cache hits {m['cache_hits']:.0f}, computed "
               f"{m['ratings_computed']:.0f} ratings){tail}")


@score_app.command("ifd")
def score_ifd_cmd(
    input: Annotated[str, typer.Option("--input", "-i", help="Dataset (any supported format)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Parquet file: records + IFD columns")],
    model: Annotated[str | None, option(IFD, "model", "--model", "-m")] = None,
    fidelity: Annotated[Literal["selectune", "official"] | None, option(IFD, "fidelity")] = None,
    template: Annotated[Literal["alpaca", "vicuna", "chat"] | None, option(IFD, "template")] = None,
    max_tokens: Annotated[int | None, option(IFD, "max_tokens", "--max-tokens", "--max-length")] = None,
    batch_size: Annotated[int | None, option(IFD, "batch_size")] = None,
    dtype: Annotated[Dtype | None, option(IFD, "dtype")] = None,
    backend: Annotated[Literal["hf", "vllm"] | None, option(IFD, "backend")] = None,
    vllm_url: VLLMUrl = None,
    limit: Annotated[int | None, typer.Option(help="Score only the first N records")] = None,
    on_invalid: Annotated[OnInvalid, typer.Option()] = "error",
) -> None:
    """IFD = ppl(A|Q)/ppl(A) and reversed IFD = ppl(Q|A')/ppl(Q) of every record under a student model, a chunk
    of records at a time (the student loaded once)."""
    import pandas as pd
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

    from selectune.data.stream import map_chunks
    from selectune.reflection.ifd import Student, ifd_scores
    from selectune.reflection.stage import IFD_CHUNK

    cfg = build(IFDConfig, model=model, fidelity=fidelity, template=template, max_tokens=max_tokens,
                batch_size=batch_size, dtype=dtype, **engine(backend, vllm_url))
    with streamed_records(input, output, on_invalid, limit) as records:
        student = Student(cfg)
        bar = tqdm(total=pq.ParquetFile(records).metadata.num_rows, desc=f"IFD {cfg.model}", unit="record")

        def with_ifd(_: int, df: pd.DataFrame) -> pd.DataFrame:
            stats = ifd_scores(df, cfg, *student.get(), progress=False)
            bar.update(len(df))
            return pd.concat([df, stats], axis=1)

        try:
            map_chunks(records, output, with_ifd, IFD_CHUNK)
        except (ValueError, OSError) as err:
            fail(str(err))
        finally:
            bar.close()
    table = pd.read_parquet(output, columns=["ifd", "rifd", "ifd_truncated"])
    typer.echo(f"scored {len(table)} records -> {output}: median IFD {table['ifd'].median():.4f} "
               f"({(table['ifd'] >= 1).mean():.1%} >= 1), median r-IFD {table['rifd'].median():.4f}, "
               f"{int(table['ifd_truncated'].sum())} truncated")
