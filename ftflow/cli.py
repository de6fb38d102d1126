"""The `ftflow` command line: each command runs a flow (or the local service) and prints a summary.

Errors of ours (ftflow.errors) end the command with their exit code and one line on stderr.
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

from ftflow.errors import FtflowError
from ftflow.settings import get_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")


@app.callback()
def root() -> None:
    """ftflow: raw conversations to fine-tuned chat models, as Prefect flows."""


def run_reporting_errors(action: Callable[[], T]) -> T:
    """Run an action; turn our errors into one line on stderr and the class's exit code."""
    try:
        return action()
    except FtflowError as exc:
        err_console.print(f"[bold red]error[/]: {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except ValueError as exc:  # option parsing (KEY=value pairs and the like)
        err_console.print(f"[bold red]error[/]: {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def sql_url_parameter(url: str | None) -> str | None:
    """Keep a database password out of flow-run parameters: pass it through the environment."""
    if not url:
        return url
    from sqlalchemy.engine import make_url

    if make_url(url).password is None:
        return url
    os.environ["FTFLOW_SQL_URL"] = url
    return "env:FTFLOW_SQL_URL"


def kv_table(title: str, rows: list[tuple[str, Any]]) -> Table:
    """A two-column table of figures; long values (model ids, paths) wrap instead of being cut."""
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
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
        (
            "tokens total / p95 / max",
            " / ".join(f"{report['tokens'][k]:,}" for k in ("total", "p95_example", "max_example")),
        ),
        ("epochs x billing tokens", f"{report['n_epochs']} x -> {report['billing_tokens']:,}"),
        ("estimated training cost", f"${report['estimated_cost_usd']:.4f} (prices {report['prices_as_of']})"),
        ("quality", "passed" if report["quality"]["success"] else "FAILED"),
        ("report", report["files"]["report.json"]),
    ]
    console.print(kv_table(f"prepared {report['dataset_sha256'][:12]} for {report['model']}", rows))


def print_run_summary(record: dict[str, Any]) -> None:
    evaluation, economics, promotion = record["evaluation"], record["economics"], record["promotion"]
    candidate, baseline = evaluation["candidate"], evaluation["baseline"]
    tokens = record["tokens_reconciliation"]
    rows = [
        ("fine-tuned model", record["fine_tuned_model"]),
        ("job", f"{record['job_id']} (key {record['idempotency_key'][:12]})"),
        ("trained tokens", f"{record['trained_tokens']:,} (estimated {tokens['estimated']:,}"
                           f"{', MISMATCH' if tokens['flagged'] else ''})"),
        ("training cost", f"${economics['training_cost_usd']:.4f}"),
        ("F1 / JSON / language", f"{candidate['f1']:.2f} / {candidate['json_valid_rate']:.0%} / "
                                 f"{candidate['language_rate']:.0%} (baseline {baseline['f1']:.2f} / "
                                 f"{baseline['json_valid_rate']:.0%} / {baseline['language_rate']:.0%})"),
        ("prompt tokens / request", f"{economics['prompt_tokens_after']:.0f} "
                                    f"(was {economics['prompt_tokens_before']:.0f}, "
                                    f"-{economics['prompt_token_reduction']:.0%})"),
        ("monthly saving", f"${economics['monthly_saving_usd']:.2f} at {economics['monthly_requests']:,} requests"),
        ("promotion", "promoted" if promotion["promoted"] else "not promoted: " + "; ".join(promotion["reasons"])),
        ("run report", f"{record['run_dir']}/run.json"),
    ]
    if "win_rate" in candidate:  # method dpo: the gate's metric
        low, high = candidate["win_rate_ci95"]
        rows.insert(4, ("win rate (95% CI)", f"{candidate['win_rate']:.2f} ({low:.2f}-{high:.2f}; baseline "
                                             f"{baseline['win_rate']:.2f})"))
    console.print(kv_table(f"run {record['run_id']}", rows))


@app.command()
def prepare(
    sources: Annotated[
        list[str], typer.Argument(help="Files or globs (.jsonl, .json, .txt, .csv, .parquet, .gz)")
    ] = None,  # type: ignore[assignment]
    out: Annotated[Path | None, typer.Option("--out", help="Output folder")] = None,
    format: Annotated[str, typer.Option("--format", help="auto|chat|nested|transcript|table|sql")] = "auto",
    model: Annotated[str | None, typer.Option(help="Base model (default from settings)")] = None,
    turns_key: Annotated[str | None, typer.Option(help="Key of the list of turns")] = None,
    role_key: Annotated[str | None, typer.Option(help="Key of a turn's role")] = None,
    content_key: Annotated[str | None, typer.Option(help="Key of a turn's text")] = None,
    text_key: Annotated[str | None, typer.Option(help="Key of a transcript string in JSON lines")] = None,
    role_map: Annotated[list[str] | None, typer.Option(help="SOURCE=role pairs, comma separated")] = None,
    speaker: Annotated[list[str] | None, typer.Option(help="Transcript PREFIX=role (repeatable)")] = None,
    id_column: Annotated[str, typer.Option(help="Table: conversation id column")] = "conversation_id",
    order_column: Annotated[str, typer.Option(help="Table: turn order column")] = "turn",
    role_column: Annotated[str, typer.Option(help="Table: role column")] = "role",
    content_column: Annotated[str, typer.Option(help="Table: content column")] = "content",
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
    """Turn raw conversations into validated, budgeted chat-format JSONL (nothing is uploaded)."""
    from typing import get_args

    from flows.prepare import prepare as prepare_flow
    from ftflow.errors import ConfigError
    from tasks.extract import ExtractOptions, Format
    from tasks.preference_shard import PreferenceOptions
    from tasks.report import GateOptions
    from tasks.shards import task_runner_for
    from tasks.transform import TransformOptions, parse_mapping

    started = time.time()
    if not os.environ.get("PREFECT_API_URL"):
        err_console.print("tip: keep a Prefect server running (`prefect server start`, then export "
                          "PREFECT_API_URL=http://127.0.0.1:4200/api) to skip the temporary server's start-up",
                          highlight=False, soft_wrap=True)

    def action() -> dict[str, Any]:
        if format not in get_args(Format):
            raise ConfigError(f"--format must be one of {', '.join(get_args(Format))}, not {format!r}")
        settings = get_settings(
            model=model,
            system_prompt=system_prompt,
            system_prompt_mode=system_prompt_mode,
            pii=pii,
            validation_fraction=validation_fraction,
            n_epochs=n_epochs,
            max_cost_usd=max_cost_usd,
            out_dir=out,
            workers=workers,
            dask_address=dask_address,
            method=method,
        )
        extract = ExtractOptions(
            format=format,
            turns_key=turns_key,
            role_key=role_key,
            content_key=content_key,  # type: ignore[arg-type]
            text_key=text_key,
            speakers=parse_mapping(speaker, option="--speaker"),
            id_column=id_column,
            order_column=order_column,
            role_column=role_column,
            content_column=content_column,
            sql_url=sql_url_parameter(sql_url),
            query=query,
            batch_size=settings.batch_size,
        )
        transform = TransformOptions.from_settings(settings, parse_mapping(role_map, option="--role-map"))
        gates = GateOptions.from_settings(settings)
        runner = task_runner_for(list(sources or []), settings.workers, settings.dask_address, settings.shard_mb << 20)
        return prepare_flow.with_options(task_runner=runner)(
            sources=list(sources or []),
            out_dir=str(settings.out_dir),
            model=settings.model,
            extract=extract,
            transform=transform,
            gates=gates,
            work_dir=str(settings.work_dir),
            shard_bytes=settings.shard_mb << 20,
            method=settings.method,
            min_rating_margin=settings.dpo_min_rating_margin,
            preference=PreferenceOptions.from_settings(settings),
        )

    try:
        report = run_reporting_errors(action)
    except typer.Exit:
        written = Path(str(get_settings(out_dir=out).out_dir)) / "report.json"
        if written.exists() and written.stat().st_mtime > started:  # the gate failed after the report
            print_prepare_summary(json.loads(written.read_text("utf-8")))
        raise
    print_prepare_summary(report)


@app.command()
def retrain(
    sources: Annotated[list[str], typer.Argument(help="Files or globs")] = None,  # type: ignore[assignment]
    runs_dir: Annotated[str, typer.Option(help="Folder of run folders")] = ".ftflow/runs",
    model: Annotated[str | None, typer.Option(help="Base model")] = None,
    system_prompt: Annotated[str | None, typer.Option(help="Short system prompt to train with")] = None,
    baseline_prompt_file: Annotated[Path | None, typer.Option(help="The full production prompt (baseline)")] = None,
    json_schema: Annotated[str | None, typer.Option(help="JSON schema answers must follow")] = None,
    max_cost_usd: Annotated[float | None, typer.Option(help="Budget gate before upload")] = None,
    n_epochs: Annotated[int | None, typer.Option(help="Epochs (default: OpenAI's rule)")] = None,
    monthly_requests: Annotated[int | None, typer.Option(help="Volume for the cost case")] = None,
    backend: Annotated[str | None, typer.Option(help="local|openai|azure")] = None,
    force: Annotated[bool, typer.Option(help="Train even if the data is unchanged; new job")] = False,
    method: Annotated[str | None, typer.Option(help="supervised|dpo (preference pairs)")] = None,
) -> None:
    """Run the whole pipeline once: prepare, budget, upload, fine-tune, evaluate, promote, record."""
    from flows.retrain import retrain as retrain_flow

    def action() -> Any:
        baseline = baseline_prompt_file.read_text("utf-8").strip() if baseline_prompt_file else None
        settings = get_settings(model=model, system_prompt=system_prompt, max_cost_usd=max_cost_usd,
                                n_epochs=n_epochs, backend=backend, baseline_system_prompt=baseline,
                                eval_json_schema=json_schema, monthly_requests=monthly_requests, method=method)
        return retrain_flow(
            sources=list(sources or ["data/raw/*"]), runs_dir=runs_dir, model=settings.model,
            system_prompt=settings.system_prompt, baseline_system_prompt=settings.baseline_system_prompt,
            eval_json_schema=str(settings.eval_json_schema) if settings.eval_json_schema else None,
            max_cost_usd=settings.max_cost_usd, n_epochs=settings.n_epochs, suffix=settings.suffix,
            monthly_requests=settings.monthly_requests, force=force, backend=settings.backend,
            method=settings.method, dpo_beta=settings.dpo_beta)

    record = run_reporting_errors(action)
    if not isinstance(record, dict):  # a Cancelled state
        err_console.print(f"cancelled: {getattr(record, 'message', record)}")
        raise typer.Exit(5)
    print_prepare_summary(record["prepare"])
    if record["status"] == "skipped":
        console.print(f"[yellow]skipped[/]: {record['reason']}")
        return
    print_run_summary(record)


@app.command()
def finetune(
    dataset_dir: Annotated[str, typer.Argument(help="A folder written by `ftflow prepare`")],
    model: Annotated[str | None, typer.Option(help="Base model")] = None,
    n_epochs: Annotated[int | None, typer.Option(help="Epochs (default: the prepared report's)")] = None,
    backend: Annotated[str | None, typer.Option(help="local|openai|azure")] = None,
    force: Annotated[bool, typer.Option(help="Start a new job even if one exists for this data")] = False,
    method: Annotated[str | None, typer.Option(help="supervised|dpo (as the folder was prepared)")] = None,
) -> None:
    """Upload a prepared dataset and fine-tune on it (exactly one job per data and settings)."""
    from flows.finetune import finetune as finetune_flow

    settings = get_settings(model=model, backend=backend, method=method)
    result = run_reporting_errors(lambda: finetune_flow(dataset_dir, model=settings.model, suffix=settings.suffix,
                                                        n_epochs=n_epochs, force=force, backend=settings.backend,
                                                        method=settings.method, dpo_beta=settings.dpo_beta))
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


models_app = typer.Typer(help="Fine-tuned models: the runs that made them, and the promoted one.")
app.add_typer(models_app, name="models")


@models_app.callback(invoke_without_command=True)
def models(ctx: typer.Context, limit: Annotated[int, typer.Option(help="Runs to show")] = 20) -> None:
    """List the registry's runs, newest first."""
    if ctx.invoked_subcommand:
        return
    from tasks.registry import Registry

    table = Table()
    for column in ("run", "status", "method", "dataset", "fine-tuned model", "F1", "promoted", "trained tokens"):
        table.add_column(column, overflow="fold")
    for run in Registry(get_settings().registry_url).list_runs(limit):
        f1 = (run.get("evaluation") or {}).get("candidate", {}).get("f1")
        table.add_row(run["run_id"], run["status"], run.get("method", "supervised"),
                      (run.get("dataset_sha256") or "")[:12],
                      run.get("fine_tuned_model") or "-", f"{f1:.2f}" if f1 is not None else "-",
                      "yes" if run.get("promoted") else "no",
                      f"{run['trained_tokens']:,}" if run.get("trained_tokens") else "-")
    console.print(table)


@models_app.command("current")
def models_current(model: Annotated[str | None, typer.Option(help="Base model (default: any)")] = None) -> None:
    """Print the promoted fine-tuned model id: what downstream apps should use."""
    from tasks.registry import Registry

    promoted = Registry(get_settings().registry_url).current_promotion(model)
    if promoted is None:
        err_console.print("no model has been promoted yet")
        raise typer.Exit(1)
    print(promoted["model"])


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
    from tasks.economics import cost_case, cost_case_markdown

    case = run_reporting_errors(lambda: cost_case(
        model=get_settings(model=model).model, prompt_tokens_before=prompt_tokens_before,
        completion_tokens_before=completion_tokens, prompt_tokens_after=prompt_tokens_after,
        completion_tokens_after=completion_tokens, trained_tokens=trained_tokens, monthly_requests=monthly_requests))
    console.print(cost_case_markdown(case), highlight=False)


@app.command()
def service(
    host: Annotated[str, typer.Option(help="Interface to bind (loopback by default)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8765,
    data_dir: Annotated[Path | None, typer.Option(help="State and blobs (default .ftflow/service)")] = None,
) -> None:
    """Run the local OpenAI-compatible fine-tuning service (a simulator) in the foreground."""
    from localai.server import serve_forever

    serve_forever(host=host, port=port, data_dir=data_dir, announce=console.print)


def main() -> None:  # pragma: no cover - console entry for `python -m ftflow.cli`
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
