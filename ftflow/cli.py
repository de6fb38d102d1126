"""The `ftflow` command line: each command runs a flow (or the local service) and prints a summary.

Expected errors (ftflow.errors) end the command with their exit code and one line on stderr.
Tables are rich tables printed as wide as their ids need, so ids never wrap and copy whole.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from ftflow.errors import EnvironmentFailure, FtflowError
from ftflow.formatting import change, count, share, usd, with_interval
from ftflow.prefect_api import prefect_api
from ftflow.settings import get_settings
from ftflow.suites_process import start_suites

HELP = "Raw conversations to fine-tuned chat models, as Prefect flows: prepare, fine-tune, evaluate, promote."
app = typer.Typer(no_args_is_help=True, add_completion=False, help=HELP, rich_markup_mode=None)
console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")


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


def print_table(table: Table) -> None:
    """Print a table at least as wide as its ids need (no_wrap or min_width columns): they never break.

    On a narrower terminal the terminal itself folds the lines, which copies back whole.
    """
    from rich.measure import Measurement

    for column in table.columns:
        if column.no_wrap:  # rich still crops no_wrap cells with "…" when the table is too narrow
            column.min_width = max([len(str(cell)) for cell in column.cells] + [len(str(column.header)), 1])
    needed = Measurement.get(console, console.options.update_width(10_000), table).minimum
    wide = Console(width=max(console.width, needed), stderr=console.stderr)  # rich caps print(width=) at its own
    wide.print(table)


def announce_prefect_server() -> None:
    """Say why the first seconds pass quietly: without PREFECT_API_URL a temporary server starts."""
    console.print(  # on stdout: stderr is kept for the one error line
        "PREFECT_API_URL is not set: starting a temporary Prefect server (a few seconds). To keep one running for "
        "later commands: FTFLOW_PREFECT_SERVER=background (setting prefect_server)",
        style="dim", highlight=False, soft_wrap=True)


def run_reporting_errors(action: Callable[[], T]) -> T:
    """Run an action; turn our errors into one line on stderr and the class's exit code.

    Prefect's own report of the failed run (tracebacks) stays in the run log, off the terminal.
    """
    from ftflow.terminal import one_line_errors

    def environment_failures_as_ours() -> T:
        try:
            return action()
        except OSError as exc:  # before one_line_errors, which shows Prefect's tracebacks for other errors
            raise EnvironmentFailure.from_os_error(exc) from exc

    try:
        with one_line_errors():
            return environment_failures_as_ours()
    except FtflowError as exc:
        print_error(exc)
        raise typer.Exit(exc.exit_code) from None
    except ValueError as exc:  # option parsing (KEY=value pairs and the like)
        print_error(exc)
        raise typer.Exit(2) from None


def print_error(exc: BaseException) -> None:
    """The one `error: ...` line: a message over several lines is joined, never cut."""
    from rich.markup import escape

    message = " ".join(str(exc).split())
    err_console.print(f"[bold red]error[/]: {escape(message)}", highlight=False, soft_wrap=True)


def sql_url_parameter(url: str | None) -> str | None:
    """Keep a database password out of flow-run parameters: pass it through the environment."""
    if not url:
        return url
    from tasks.extract import parse_sql_url

    if parse_sql_url(url).password is None:
        return url
    os.environ["FTFLOW_SQL_URL"] = url
    return "env:FTFLOW_SQL_URL"


def kv_table(title: str, rows: list[tuple[str, Any]]) -> Table:
    """A two-column table of figures; values wrap between words, never inside one (a model id, a path)."""
    longest_word = max((len(word) for _, value in rows for word in str(value).split()), default=1)
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(min_width=longest_word)
    for key, value in rows:
        table.add_row(key, str(value))
    return table


def print_prepare_summary(report: dict[str, Any]) -> None:
    rows = [
        ("method", report.get("method", "supervised")),
        ("records read", f"{report['records_read']:,}"),
        (
            "train / validation",
            f"{report['examples_written']['train']:,} / {report['examples_written']['validation']:,}",
        ),
        ("rejected", ", ".join(f"{k}={v}" for k, v in report["rejected"].items()) or "0"),
        ("duplicates removed", str(report["duplicates_removed"])),
        ("trimmed turns", str(report["trimmed_turns"])),
        ("PII", ", ".join(f"{k}={v}" for k, v in report["pii"].items()) or "none"),
        *([("moderation", moderation_line(report["moderation"]))] if report.get("moderation") else []),
        (
            "tokens total / p95 / max",
            " / ".join(f"{report['tokens'][k]:,}" for k in ("total", "p95_example", "max_example")),
        ),
        ("epochs x tokens -> billing tokens",
         f"{report['n_epochs']} x {report['billing_tokens'] // report['n_epochs']:,} -> {report['billing_tokens']:,}"),
        ("estimated training cost", f"{usd(report['estimated_cost_usd'], 4)} (prices {report['prices_as_of']})"),
        ("quality", "passed" if report["quality"]["success"] else "FAILED"),
        ("report", report["files"]["report.json"]),
    ]
    print_table(kv_table(f"prepared {report['dataset_sha256'][:12]} for {report['model']}", rows))


def moderation_line(moderation: dict[str, Any]) -> str:
    """`report, omni-moderation-latest: 2 of 381 flagged (violence=2)`, or `off`."""
    if moderation["mode"] == "off":
        return "off"
    flagged = ", ".join(f"{k}={v}" for k, v in moderation["by_category"].items())
    return (f"{moderation['mode']}, {moderation['model']}: {moderation['flagged']} of {moderation['examples']} "
            f"flagged" + (f" ({flagged})" if flagged else "")
            + (f", {moderation['rejected']} quarantined" if moderation["rejected"] else ""))


def print_run_summary(record: dict[str, Any]) -> None:
    from tasks.summary import outcome

    rows: list[tuple[str, Any]] = [("run", record.get("run_name") or record["run_id"]), ("outcome", outcome(record))]
    if record["status"] == "succeeded":
        tokens = record["tokens_reconciliation"]
        rows += [
            ("fine-tuned model", record["fine_tuned_model"]),
            ("job", f"{record['job_id']} (key {record['idempotency_key'][:12]})"
                    + ("" if record.get("job_created", True) else ", re-attached")),
            ("trained tokens", f"{record['trained_tokens']:,} (estimated {tokens['estimated']:,}"
                               f"{', MISMATCH' if tokens['flagged'] else ''})"),
            ("cost of this run", usd(record.get("run_cost_usd"), 4)),
        ]
    models, economics = record.get("evaluation") or {}, record.get("economics")
    if models.get("candidate") and models.get("baseline"):
        candidate, baseline = models["candidate"], models["baseline"]
        if candidate.get("win_rate") is not None:  # method dpo: the gate's metric
            win = with_interval(candidate["win_rate"], (candidate.get("ci95") or {}).get("win_rate"))
            rows.append(("win rate", f"{win} (baseline {baseline['win_rate']:.2f})"))
        f1 = with_interval(candidate["f1"], (candidate.get("ci95") or {}).get("f1"))
        rows.append(("F1 / JSON / language",
                     f"{f1} / {share(candidate['json_valid_rate'])} / {share(candidate['language_rate'])} "
                     f"(baseline {baseline['f1']:.2f} / {share(baseline['json_valid_rate'])} / "
                     f"{share(baseline['language_rate'])})"))
        if candidate.get("fact_recall") is not None:
            facts = with_interval(candidate["fact_recall"], (candidate.get("ci95") or {}).get("fact_recall"))
            rows.append(("fact recall / invented", f"{facts} / {share(candidate.get('invented_fact_rate'))} "
                                                   f"(baseline {with_interval(baseline.get('fact_recall'), None)} / "
                                                   f"{share(baseline.get('invented_fact_rate'))})"))
    if economics:
        rows += [
            ("prompt tokens / request", f"{count(economics['prompt_tokens_after'])} "
                                        f"(was {count(economics['prompt_tokens_before'])}, "
                                        f"{change(-economics['prompt_token_reduction'])})"),
            ("monthly saving", f"{usd(economics['monthly_saving_usd'])} at {economics['monthly_requests']:,} requests"),
        ]
    rows.append(("run report", f"{record['run_dir']}/run.json"))
    print_table(kv_table(f"run {record['run_id']}", rows))


@app.command()
def prepare(
    sources: Annotated[
        list[str], typer.Argument(metavar="SOURCE", hidden=True)  # described in the docstring
    ] = None,  # type: ignore[assignment]
    out: Annotated[Path | None, typer.Option("--out", help="Output folder")] = None,
    format: Annotated[str | None, typer.Option("--format", help="auto|chat|nested|transcript|table|sql")] = None,
    model: Annotated[str | None, typer.Option(help="Base model (default from settings)")] = None,
    turns_key: Annotated[str | None, typer.Option(help="Key of the list of turns")] = None,
    role_key: Annotated[str | None, typer.Option(help="Key of a turn's role")] = None,
    content_key: Annotated[str | None, typer.Option(help="Key of a turn's text")] = None,
    text_key: Annotated[str | None, typer.Option(help="Key of a transcript string in JSON lines")] = None,
    role_map: Annotated[list[str] | None, typer.Option(help="SOURCE=role pairs, comma separated",
                                                       metavar="NAME=ROLE,...")] = None,
    speaker: Annotated[list[str] | None, typer.Option(help="Transcript PREFIX=role (repeatable)",
                                                      metavar="PREFIX=ROLE")] = None,
    id_column: Annotated[str | None, typer.Option(help="Table: conversation id column")] = None,
    order_column: Annotated[str | None, typer.Option(help="Table: turn order column")] = None,
    role_column: Annotated[str | None, typer.Option(help="Table: role column")] = None,
    content_column: Annotated[str | None, typer.Option(help="Table: content column")] = None,
    sql_url: Annotated[str | None, typer.Option(help="SQLAlchemy URL for --query")] = None,
    query: Annotated[str | None, typer.Option(help="SQL returning message-per-row results")] = None,
    system_prompt: Annotated[str | None, typer.Option(help="System prompt for every example")] = None,
    system_prompt_mode: Annotated[str | None, typer.Option(help="replace|if-missing")] = None,
    pii: Annotated[str | None, typer.Option(help="off|report|mask")] = None,
    validation_fraction: Annotated[float | None, typer.Option(help="Held-out share")] = None,
    n_epochs: Annotated[int | None, typer.Option(help="Epochs (default: OpenAI's rule)")] = None,
    max_cost_usd: Annotated[float | None, typer.Option(help="Fail before upload above this")] = None,
    workers: Annotated[int | None, typer.Option(help="Processes preparing shards (default: all cores)")] = None,
    dask_address: Annotated[str | None, typer.Option(help="Prepare shards on this Dask scheduler")] = None,
    method: Annotated[str | None, typer.Option(help="supervised|dpo (preference pairs)")] = None,
) -> None:
    """Turn raw conversations into validated, budgeted chat-format JSONL (nothing is uploaded).

    SOURCE: files or globs (.jsonl, .json, .txt, .csv, .parquet, .gz; none with --query).
    Options left out come from FTFLOW_*, then ftflow.toml, then the defaults (`ftflow config`).
    """
    with prefect_api(announce_prefect_server) as api, start_suites(own_process=not api.booting):
        from flows.prepare import prepare as prepare_flow
        from tasks.transform import parse_mapping

        started = time.time()
        report_file: list[Path] = []  # known once the settings are valid

        def action() -> dict[str, Any]:
            settings = get_settings(
                model=model, format=format, turns_key=turns_key, role_key=role_key, content_key=content_key,
                text_key=text_key, role_map=parse_mapping(role_map, option="--role-map") or None,
                speakers=parse_mapping(speaker, option="--speaker") or None, id_column=id_column,
                order_column=order_column, role_column=role_column, content_column=content_column,
                system_prompt=system_prompt, system_prompt_mode=system_prompt_mode, pii=pii,
                validation_fraction=validation_fraction, n_epochs=n_epochs, max_cost_usd=max_cost_usd, out_dir=out,
                workers=workers, dask_address=dask_address, method=method,
            )
            report_file.append(Path(settings.out_dir) / "report.json")
            api.connect()
            return prepare_flow(sources=list(sources or []), sql_url=sql_url_parameter(sql_url), query=query,
                                settings=settings)

        try:
            report = run_reporting_errors(action)
        except typer.Exit:
            written = report_file[0] if report_file else None
            if written and written.exists() and written.stat().st_mtime > started:  # the gate failed after the report
                print_prepare_summary(json.loads(written.read_text("utf-8")))
            raise
        print_prepare_summary(report)


@app.command()
def retrain(
    sources: Annotated[list[str], typer.Argument(metavar="SOURCE", hidden=True)] = None,  # type: ignore[assignment]
    runs_dir: Annotated[Path | None, typer.Option(help="Folder of run folders")] = None,
    model: Annotated[str | None, typer.Option(help="Base model")] = None,
    system_prompt: Annotated[str | None, typer.Option(help="Short system prompt to train with")] = None,
    baseline_prompt_file: Annotated[Path | None, typer.Option(help="The full production prompt (baseline)")] = None,
    json_schema: Annotated[str | None, typer.Option(help="JSON schema answers must follow")] = None,
    max_cost_usd: Annotated[float | None, typer.Option(help="Budget gate before upload")] = None,
    n_epochs: Annotated[int | None, typer.Option(help="Epochs (default: OpenAI's rule)")] = None,
    monthly_requests: Annotated[int | None, typer.Option(help="Volume for the cost case")] = None,
    backend: Annotated[str | None, typer.Option(help="local|openai|azure|together|bedrock|fireworks")] = None,
    force: Annotated[bool, typer.Option(help="Train even if the data is unchanged; new job")] = False,
    method: Annotated[str | None, typer.Option(help="supervised|dpo (preference pairs)")] = None,
) -> None:
    """Run the whole pipeline once: prepare, budget, upload, fine-tune, evaluate, promote, record.

    SOURCE: files or globs (default: data/raw/*). Options left out come from FTFLOW_*, then
    ftflow.toml, then the defaults (`ftflow config`).
    """
    with prefect_api(announce_prefect_server) as api, start_suites(own_process=not api.booting):
        from flows.retrain import retrain as retrain_flow

        def action() -> Any:
            settings = get_settings(runs_dir=runs_dir, model=model, system_prompt=system_prompt,
                                    baseline_prompt_file=baseline_prompt_file, eval_json_schema=json_schema,
                                    max_cost_usd=max_cost_usd, n_epochs=n_epochs, monthly_requests=monthly_requests,
                                    backend=backend, method=method)
            api.connect()
            return retrain_flow(sources=list(sources or ["data/raw/*"]), force=force, settings=settings)

        record = run_reporting_errors(action)
        if not isinstance(record, dict):  # a Cancelled state
            err_console.print(f"cancelled: {getattr(record, 'message', record)}")
            raise typer.Exit(5)
        if record["prepare"]:  # None when the sources and settings were unchanged: nothing was prepared
            print_prepare_summary(record["prepare"])
        print_run_summary(record)


@app.command()
def finetune(
    dataset_dir: Annotated[str, typer.Argument(metavar="DATASET_DIR", help="A folder written by `ftflow prepare`")],
    model: Annotated[str | None, typer.Option(help="Base model")] = None,
    n_epochs: Annotated[int | None, typer.Option(help="Epochs (default: the n_epochs setting, else the "
                                                      "prepared report's)")] = None,
    backend: Annotated[str | None, typer.Option(help="local|openai|azure|together|bedrock|fireworks")] = None,
    force: Annotated[bool, typer.Option(help="Start a new job even if one exists for this data")] = False,
    method: Annotated[str | None, typer.Option(help="supervised|dpo (as the folder was prepared)")] = None,
) -> None:
    """Upload a prepared dataset and fine-tune on it (exactly one job per data and settings)."""
    with prefect_api(announce_prefect_server) as api:
        from flows.finetune import finetune as finetune_flow

        settings = run_reporting_errors(lambda: get_settings(model=model, n_epochs=n_epochs, backend=backend,
                                                             method=method))
        api.connect()
        result = run_reporting_errors(lambda: finetune_flow(dataset_dir, force=force, settings=settings))
        if not isinstance(result, dict):
            err_console.print(f"cancelled: {getattr(result, 'message', result)}")
            raise typer.Exit(5)
        console.print(f"fine-tuned model: [bold]{result['fine_tuned_model']}[/] (job {result['job_id']}, "
                      f"{result['trained_tokens']:,} trained tokens)")


@app.command()
def serve() -> None:
    """Serve the deployments of prefect.yaml on this machine (schedules included), no worker needed."""
    from prefect import serve as prefect_serve

    from ftflow.deployments import load_deployments

    prefect_serve(*run_reporting_errors(load_deployments))


@app.command("config")
def config(as_json: Annotated[bool, typer.Option("--json", help="Print as JSON")] = False) -> None:
    """Print every effective setting with its value and origin: default, the TOML file, FTFLOW_X.

    Secrets (API keys) are shown only as present or absent.
    """
    effective = run_reporting_errors(get_settings).effective()
    if as_json:
        print(json.dumps(effective, indent=2, ensure_ascii=False))
        return
    table = Table()
    table.add_column("setting", no_wrap=True)
    table.add_column("value")
    table.add_column("origin", no_wrap=True)
    for name, shown in effective.items():
        value = shown["value"]
        table.add_row(name, value if isinstance(value, str) else json.dumps(value, ensure_ascii=False),
                      shown["origin"])
    print_table(table)


models_app = typer.Typer(help="Fine-tuned models: the runs that made them, and the promoted one.")
app.add_typer(models_app, name="models")


@models_app.callback(invoke_without_command=True)
def models(ctx: typer.Context, limit: Annotated[int, typer.Option(help="Runs to show")] = 20) -> None:
    """List the fine-tuned models of the last runs, newest first."""
    if ctx.invoked_subcommand:
        return
    from tasks.registry import Registry

    table = Table()
    for column in ("run", "status", "method", "backend", "dataset", "fine-tuned model", "F1", "promoted",
                   "trained tokens"):
        table.add_column(column, no_wrap=True)
    for run in run_reporting_errors(lambda: Registry(get_settings().registry_url).list_runs(limit)):
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
    from tasks.registry import Registry

    promoted = run_reporting_errors(lambda: Registry(get_settings().registry_url).current_promotion(model))
    if promoted is None:
        err_console.print("no model has been promoted yet")
        raise typer.Exit(1)
    if name_only:
        print(promoted["deployment"] or promoted["model"])
        return
    print(f"backend: {promoted['backend'] or '-'}\nmodel: {promoted['model']}\n"
          f"deployment: {promoted['deployment'] or '-'}")


@app.command()
def deployments() -> None:
    """List the deployments ftflow made (Azure), their role and what each costs per month to host."""
    import datetime as dt

    from tasks.hosting import deployment_rows
    from tasks.registry import Registry

    settings = get_settings()
    rows = deployment_rows(Registry(settings.registry_url), settings.keep_deployments)
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


@app.command("snapshot-eval")
def snapshot_eval(
    run_dir: Annotated[str | None, typer.Option(help="Run folder whose validation.jsonl to answer "
                                                     "(default: the promoted model's run)")] = None,
    model: Annotated[str | None, typer.Option(help="Base model whose promoted model to snapshot")] = None,
) -> None:
    """Record the promoted model's answers on a held-out set into the run folder, while it still serves."""
    with prefect_api(announce_prefect_server) as api:
        from flows.snapshot_eval import snapshot_eval as snapshot_flow
        from ftflow.errors import ConfigError
        from tasks.registry import Registry
        from tasks.snapshot import snapshot_path

        def action() -> dict[str, Any]:
            settings = get_settings()
            registry = Registry(settings.registry_url)
            promoted = registry.current_promotion(model)
            if promoted is None:
                raise ConfigError("no model has been promoted yet: nothing to snapshot")
            folder = run_dir or next((r.get("run_dir") for r in registry.list_runs(500)
                                      if r["run_id"] == promoted["run_id"]), None)
            if not folder:
                raise ConfigError(f"the run folder of {promoted['run_id']} is unknown; pass --run-dir")
            api.connect()
            return snapshot_flow(folder, promoted["model"], promoted["backend"], settings=settings)

        snapshot = run_reporting_errors(action)
        written = snapshot_path(Path(snapshot["validation_file"]).parent, snapshot["model"])
        console.print(f"snapshot of {snapshot['model']} ({snapshot['backend']}): {snapshot['metrics']['examples']} "
                      f"answers, F1 {snapshot['metrics']['f1']:.2f}; written to {written}", soft_wrap=True)


runs_app = typer.Typer(help="The retrain runs in the registry: outcome, dataset, evaluation, cost.")
app.add_typer(runs_app, name="runs")


@runs_app.callback(invoke_without_command=True)
def runs(ctx: typer.Context, limit: Annotated[int, typer.Option(help="Runs to show")] = 20) -> None:
    """List the last runs, newest first: outcome, dataset, F1 with its interval, rates, cost, promoted model."""
    if ctx.invoked_subcommand:
        return
    from rich import box

    from tasks.registry import Registry
    from tasks.summary import TERMINAL_COLUMNS, history_row

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for column in TERMINAL_COLUMNS:
        # ids never wrap; the outcome does ("re-attached, not promoted") when 100 columns need it
        table.add_column(column, no_wrap=column != "outcome",
                         justify="right" if column in ("facts", "cost") else "left")
    for record in run_reporting_errors(lambda: Registry(get_settings().registry_url).list_runs(limit)):
        row = history_row(record)
        table.add_row(*(row[column] for column in TERMINAL_COLUMNS))
    print_table(table)


@runs_app.command("show")
def runs_show(run: Annotated[str, typer.Argument(
        metavar="RUN", help="Run name, run id or Prefect flow-run id, or the start of one")]) -> None:
    """Print one run's summary: outcome, dataset, job, loss, evaluation, cost case."""
    from rich.markdown import Markdown

    from ftflow.errors import ConfigError
    from tasks.registry import Registry
    from tasks.summary import summary_markdown

    def find() -> dict[str, Any]:
        matches = Registry(get_settings().registry_url).find_runs(run)
        if matches and run in (matches[0]["run_id"], matches[0].get("run_name"), matches[0].get("flow_run_id")):
            return matches[0]  # the newest of the runs with this name (older records shared names)
        if len(matches) != 1:
            ids = ", ".join(f"{m['run_id']} ({m.get('run_name') or '-'}, {m['status']})" for m in matches[:5])
            raise ConfigError(f"no run matches {run!r}" if not matches else f"{run!r} matches {len(matches)} runs: "
                              f"{ids}; give one of these run ids")
        return matches[0]

    # wide enough for the dataset's sha256 and the model ids in the summary's tables
    Console(width=max(console.width, 120)).print(Markdown(summary_markdown(run_reporting_errors(find))))


@app.command()
def economics(
    model: Annotated[str | None, typer.Option(help="Base model")] = None,
    prompt_tokens_before: Annotated[float, typer.Option(help="Prompt tokens per request, base + long prompt")] = 600,
    prompt_tokens_after: Annotated[float, typer.Option(help="Prompt tokens per request, fine-tuned")] = 60,
    completion_tokens: Annotated[float, typer.Option(help="Completion tokens per request")] = 150,
    trained_tokens: Annotated[int, typer.Option(help="Tokens the job trains (billing tokens)")] = 1_000_000,
    monthly_requests: Annotated[int, typer.Option(help="Requests per month")] = 100_000,
) -> None:
    """What-if cost case: fine-tuned model + short prompt against base model + long prompt."""
    from tasks.economics import cost_case

    case = run_reporting_errors(lambda: cost_case(
        model=get_settings(model=model).model, prompt_tokens_before=prompt_tokens_before,
        completion_tokens_before=completion_tokens, prompt_tokens_after=prompt_tokens_after,
        completion_tokens_after=completion_tokens, trained_tokens=trained_tokens, monthly_requests=monthly_requests))
    table = Table(title=f"cost case for {case.model} (prices as of {case.prices_as_of})", title_justify="left")
    table.add_column("", no_wrap=True)
    for column in ("base + long prompt", "fine-tuned + short prompt"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_row("prompt tokens / request", count(case.prompt_tokens_before), count(case.prompt_tokens_after))
    table.add_row("completion tokens / request", count(case.completion_tokens_before),
                  count(case.completion_tokens_after))
    table.add_row("cost per 1K requests", usd(case.cost_per_1k_requests_before_usd, 4),
                  usd(case.cost_per_1k_requests_after_usd, 4))
    table.add_row(f"cost per month ({case.monthly_requests:,} requests)", usd(case.monthly_cost_before_usd),
                  usd(case.monthly_cost_after_usd))
    print_table(table)
    payback = (f"pays the training back in {case.payback_months} months" if case.payback_months is not None
               else "never pays the training back: per request it costs more")
    console.print(f"monthly saving {usd(case.monthly_saving_usd)}; training {usd(case.training_cost_usd)} "
                  f"({case.trained_tokens:,} tokens); {payback}", highlight=False)


@app.command()
def service(
    host: Annotated[str, typer.Option(help="Interface to bind (loopback by default)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8765,
    data_dir: Annotated[Path | None, typer.Option(help="State and blobs (default .ftflow/service)")] = None,
    max_running_jobs: Annotated[int | None, typer.Option(help="Jobs running at once; more wait queued")] = None,
    daily_job_limit: Annotated[int | None, typer.Option(help="Jobs per model and 24 hours (OpenAI's 429)")] = None,
) -> None:
    """Run the local OpenAI-compatible fine-tuning service (a simulator) in the foreground.

    Its settings are the service_* settings (`ftflow config`); its key FTFLOW_SERVICE_API_KEY.
    """
    from localai.server import serve_forever

    config = run_reporting_errors(lambda: get_settings(
        service_data_dir=data_dir, service_max_running_jobs=max_running_jobs, service_daily_job_limit=daily_job_limit,
    ).service_config())
    serve_forever(host=host, port=port, config=config, announce=console.print)


server_app = typer.Typer(help="The Prefect server ftflow leaves running for later commands (setting prefect_server).")
app.add_typer(server_app, name="server")


@server_app.command("status")
def server_status() -> None:
    """Say whether ftflow's background Prefect server runs for this PREFECT_HOME (exit 1: it does not)."""
    import datetime as dt

    from ftflow.prefect_server import prefect_home, running_background_server

    record = running_background_server()
    if record is None:
        console.print(f"no background Prefect server runs for {prefect_home()}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    since = dt.datetime.fromtimestamp(record.started_at).strftime("%Y-%m-%d %H:%M")
    console.print(f"a Prefect server runs at {record.api_url} for {prefect_home()} (pid {record.pid}, Prefect "
                  f"{record.prefect_version}, since {since}); `ftflow server stop` ends it",
                  highlight=False, soft_wrap=True)


@server_app.command("stop")
def server_stop() -> None:
    """Stop ftflow's background Prefect server of this PREFECT_HOME, if one runs."""
    from ftflow.prefect_server import prefect_home, stop_background_server

    record = stop_background_server()
    console.print(f"stopped the Prefect server at {record.api_url} (pid {record.pid})" if record
                  else f"no background Prefect server runs for {prefect_home()}", highlight=False, soft_wrap=True)


def main() -> None:
    """The `ftflow` console entry point; SIGTERM stops it as Ctrl-C does, exit 128 + the signal (143)."""
    from ftflow.process_exit import skip_final_collections, stopped_by_signals

    skip_final_collections()  # a second or more at exit otherwise (ftflow/process_exit.py)
    with stopped_by_signals() as received:
        try:
            app()
        except SystemExit:
            if received:  # Prefect and the runner report the interrupt as their own failure
                sys.exit(128 + received[0])
            raise


if __name__ == "__main__":  # pragma: no cover
    main()
