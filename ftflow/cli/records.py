"""The commands that read the registry: models (and the promoted one), deployments, runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ftflow.cli.output import console, err_console, print_table
from ftflow.cli.reporting import run_reporting_errors
from ftflow.formatting import count, usd
from ftflow.settings import get_settings

if TYPE_CHECKING:
    from ftflow.store.lineage import LineageStore


def lineage() -> LineageStore:
    """The lineage store of the settings in effect (a bad setting raises here, inside the error reporting)."""
    from ftflow.run_resources import RunResources

    return RunResources(get_settings()).lineage


models_app = typer.Typer(help="Fine-tuned models: the runs that made them, and the promoted one.")


@models_app.callback(invoke_without_command=True)
def models(ctx: typer.Context, limit: Annotated[int, typer.Option(help="Runs to show")] = 20) -> None:
    """List the fine-tuned models of the last runs, newest first."""
    if ctx.invoked_subcommand:
        return
    table = Table()
    for column in ("run", "status", "method", "backend", "dataset", "fine-tuned model", "F1", "promoted",
                   "trained tokens"):
        table.add_column(column, no_wrap=True)
    for run in run_reporting_errors(lambda: lineage().list_runs(limit)):
        f1 = (run.get("evaluation") or {}).get("candidate", {}).get("f1")
        table.add_row(run.get("run_name") or run["run_id"], run["status"], run.get("method", "supervised"),
                      run.get("backend") or "-", (run.get("dataset_sha256") or "")[:8],
                      run.get("fine_tuned_model") or "-", f"{f1:.2f}" if f1 is not None else "-",
                      "yes" if run.get("promoted") else "no", count(run.get("trained_tokens")))
    print_table(table)


@models_app.command("current")
def models_current(
    model: Annotated[str | None, typer.Option(help="Base model (default: any)")] = None,
    name_only: Annotated[bool, typer.Option("--name-only", help="Print only the name to call it by")] = False,
) -> None:
    """Print the promoted model: backend, model id and deployment (what downstream apps should call)."""
    promoted = run_reporting_errors(lambda: lineage().current_promotion(model))
    if promoted is None:
        err_console.print("no model has been promoted yet")
        raise typer.Exit(1)
    if name_only:
        print(promoted["deployment"] or promoted["model"])
        return
    print(f"backend: {promoted['backend'] or '-'}\nmodel: {promoted['model']}\n"
          f"deployment: {promoted['deployment'] or '-'}")


def deployments() -> None:
    """List the deployments ftflow made (Azure), their role and what each costs per month to host."""
    import datetime as dt

    from ftflow.run_resources import RunResources
    from tasks.hosting import deployment_rows

    settings = get_settings()
    rows = deployment_rows(RunResources(settings), settings.keep_deployments)
    if not rows:
        console.print("no deployments: ftflow deploys fine-tuned models on Azure only")
        return
    table = Table()
    for column in ("backend", "deployment", "model", "role", "since", "per month"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        since = dt.datetime.fromtimestamp(row["created_at"], dt.UTC).strftime("%Y-%m-%d %H:%M")
        table.add_row(row["backend"], row["deployment"], row["model"], row["role"], since, usd(row["usd_per_month"]))
    print_table(table)
    total = sum(row["usd_per_month"] or 0.0 for row in rows)
    console.print(f"{len(rows)} deployments, {usd(total)} per month to host (idle or not)", highlight=False)


runs_app = typer.Typer(help="The retrain runs in the registry: outcome, dataset, evaluation, cost.")


@runs_app.callback(invoke_without_command=True)
def runs(ctx: typer.Context, limit: Annotated[int, typer.Option(help="Runs to show")] = 20) -> None:
    """List the last runs, newest first: outcome, dataset, F1 with its interval, rates, cost, promoted model."""
    if ctx.invoked_subcommand:
        return
    from rich import box

    from tasks.summary import TERMINAL_COLUMNS, history_row

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for column in TERMINAL_COLUMNS:
        # ids never wrap; the outcome does ("re-attached, not promoted") when 100 columns need it
        table.add_column(column, no_wrap=column != "outcome",
                         justify="right" if column in ("facts", "cost") else "left")
    for record in run_reporting_errors(lambda: lineage().list_runs(limit)):
        row = history_row(record)
        table.add_row(*(row[column] for column in TERMINAL_COLUMNS))
    print_table(table)


@runs_app.command("show")
def runs_show(run: Annotated[str, typer.Argument(
        metavar="RUN", help="Run name, run id or Prefect flow-run id, or the start of one")]) -> None:
    """Print one run's summary: outcome, dataset, job, loss, evaluation, cost case."""
    from rich.markdown import Markdown

    from ftflow.errors import ConfigError
    from tasks.summary import summary_markdown

    def find() -> dict[str, Any]:
        matches = lineage().find_runs(run)
        if matches and run in (matches[0]["run_id"], matches[0].get("run_name"), matches[0].get("flow_run_id")):
            return matches[0]  # the newest of the runs with this name (older records shared names)
        if len(matches) != 1:
            ids = ", ".join(f"{m['run_id']} ({m.get('run_name') or '-'}, {m['status']})" for m in matches[:5])
            raise ConfigError(f"no run matches {run!r}" if not matches else f"{run!r} matches {len(matches)} runs: "
                              f"{ids}; give one of these run ids")
        return matches[0]

    # wide enough for the dataset's sha256 and the model ids in the summary's tables
    Console(width=max(console.width, 120)).print(Markdown(summary_markdown(run_reporting_errors(find))))
