"""The `selectune` command line: one module per command group, every heavy import inside a command so `--help`
is instant. This package is the only part of the library that may import Prefect (``run`` starts the flow)."""

from __future__ import annotations

import typer

from selectune.cli import data, evaluate, judge, reflect, run, score, select, tune

app = typer.Typer(help="Curate instruction-tuning data with the LLM itself, then train on it.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(data.models_app, name="models")
app.add_typer(data.data_app, name="data")
app.add_typer(score.score_app, name="score")
app.command("reflect")(reflect.reflect_cmd)
app.command("select")(select.select_cmd)
app.command("tune")(tune.tune_cmd)
app.add_typer(judge.judge_app, name="judge")
app.command("answer")(judge.answer_cmd)
app.command("evaluate")(evaluate.evaluate_cmd)
app.command("run")(run.run_cmd)
app.command("experiment")(run.experiment_cmd)
app.command("compare")(run.compare_cmd)
