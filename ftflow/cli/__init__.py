"""The `ftflow` command line: each command runs a flow (or the local service) and prints a summary.

The one part of ftflow that imports `flows` and `tasks` (pyproject.toml's import contracts).

    pipeline.py         prepare, retrain, finetune, snapshot-eval: the commands that run flows
    records.py          models, models current, deployments, runs, runs show: the registry read back
    config.py           config: the effective settings and where each came from
    economics.py        economics: the what-if cost case
    serving.py          serve (prefect.yaml's deployments), service (the local service)
    server.py           server status|stop: the Prefect server kept for later commands
    summaries.py        the tables printed after prepare and retrain
    output.py           rich tables as wide as their ids need, the one `error: ...` line
    reporting.py        expected errors (ftflow.errors) -> one line on stderr and the class's exit code
    flow_parameters.py  a database password goes through the environment, never into parameters

This module builds the app from them, in the order `ftflow --help` lists the commands.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ftflow.cli import config, economics, pipeline, records, server, serving

HELP = "Raw conversations to fine-tuned chat models, as Prefect flows: prepare, fine-tune, evaluate, promote."
app = typer.Typer(no_args_is_help=True, add_completion=False, help=HELP, rich_markup_mode=None)


def print_version(value: bool) -> None:
    if value:
        from ftflow import __version__

        print(f"ftflow {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", callback=print_version, is_eager=True,
                                          help="Print the version and exit")] = False,
) -> None:
    """Raw conversations to fine-tuned chat models, as Prefect flows."""


app.command()(pipeline.prepare)
app.command()(pipeline.retrain)
app.command()(pipeline.finetune)
app.command()(serving.serve)
app.command("config")(config.config)
app.add_typer(records.models_app, name="models")
app.command()(records.deployments)
app.command("snapshot-eval")(pipeline.snapshot_eval)
app.add_typer(records.runs_app, name="runs")
app.command()(economics.economics)
app.command()(serving.service)
app.add_typer(server.server_app, name="server")


def main() -> None:
    """The `ftflow` console entry point; SIGTERM stops it as Ctrl-C does, exit 128 + the signal (143)."""
    from ftflow.process_exit import end_after_exit_hooks, skip_final_collections, stopped_by_signals

    skip_final_collections()  # a second or more at exit otherwise (ftflow/process_exit.py)
    try:
        with stopped_by_signals() as received:
            try:
                app()
            except SystemExit:
                if received:  # Prefect and the runner report the interrupt as their own failure
                    sys.exit(128 + received[0])
                raise
    except SystemExit as exited:
        end_after_exit_hooks(exited.code)  # no interpreter teardown after the exit hooks
        raise
