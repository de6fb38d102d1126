"""The commands that run flows: prepare, retrain, finetune, snapshot-eval.

Each resolves the settings once (options over FTFLOW_* over ftflow.toml over the defaults),
connects to Prefect (a temporary server when PREFECT_API_URL is unset) and prints a summary.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ftflow.cli.flow_parameters import sql_url_parameter
from ftflow.cli.output import announce_prefect_server, console, err_console
from ftflow.cli.reporting import run_reporting_errors
from ftflow.cli.summaries import print_prepare_summary, print_run_summary
from ftflow.prefect_api import prefect_api
from ftflow.settings import get_settings
from ftflow.suites_process import start_suites_for


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
    engine: Annotated[str | None, typer.Option(help="fast|reference: how chat records are prepared "
                                                    "(same outputs)")] = None,
) -> None:
    """Turn raw conversations into validated, budgeted chat-format JSONL (nothing is uploaded).

    SOURCE: files or globs (.jsonl, .json, .txt, .csv, .parquet, .gz; none with --query).
    Options left out come from FTFLOW_*, then ftflow.toml, then the defaults (`ftflow config`).
    """
    with prefect_api(announce_prefect_server) as api, start_suites_for(api.booting):
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
                workers=workers, dask_address=dask_address, method=method, engine=engine,
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
    engine: Annotated[str | None, typer.Option(help="fast|reference: how chat records are prepared "
                                                    "(same outputs)")] = None,
) -> None:
    """Run the whole pipeline once: prepare, budget, upload, fine-tune, evaluate, promote, record.

    SOURCE: files or globs (default: data/raw/*). Options left out come from FTFLOW_*, then
    ftflow.toml, then the defaults (`ftflow config`).
    """
    with prefect_api(announce_prefect_server) as api, start_suites_for(api.booting):
        from flows.retrain import retrain as retrain_flow

        def action() -> Any:
            settings = get_settings(runs_dir=runs_dir, model=model, system_prompt=system_prompt,
                                    baseline_prompt_file=baseline_prompt_file, eval_json_schema=json_schema,
                                    max_cost_usd=max_cost_usd, n_epochs=n_epochs, monthly_requests=monthly_requests,
                                    backend=backend, method=method, engine=engine)
            api.connect()
            return retrain_flow(sources=list(sources or ["data/raw/*"]), force=force, settings=settings)

        record = run_reporting_errors(action)
        if not isinstance(record, dict):  # a Cancelled state
            err_console.print(f"cancelled: {getattr(record, 'message', record)}")
            raise typer.Exit(5)
        if record["prepare"]:  # None when the sources and settings were unchanged: nothing was prepared
            print_prepare_summary(record["prepare"])
        print_run_summary(record)


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


def snapshot_eval(
    run_dir: Annotated[str | None, typer.Option(help="Run folder whose validation.jsonl to answer "
                                                     "(default: the promoted model's run)")] = None,
    model: Annotated[str | None, typer.Option(help="Base model whose promoted model to snapshot")] = None,
) -> None:
    """Record the promoted model's answers on a held-out set into the run folder, while it still serves."""
    with prefect_api(announce_prefect_server) as api:
        from flows.snapshot_eval import snapshot_eval as snapshot_flow
        from ftflow.errors import ConfigError
        from ftflow.run_resources import RunResources
        from tasks.snapshot import snapshot_path

        def action() -> dict[str, Any]:
            settings = get_settings()
            lineage = RunResources(settings).lineage
            promoted = lineage.current_promotion(model)
            if promoted is None:
                raise ConfigError("no model has been promoted yet: nothing to snapshot")
            folder = run_dir or next((r.get("run_dir") for r in lineage.list_runs(500)
                                      if r["run_id"] == promoted["run_id"]), None)
            if not folder:
                raise ConfigError(f"the run folder of {promoted['run_id']} is unknown; pass --run-dir")
            api.connect()
            return snapshot_flow(folder, promoted["model"], promoted["backend"], settings=settings)

        snapshot = run_reporting_errors(action)
        written = snapshot_path(Path(snapshot["validation_file"]).parent, snapshot["model"])
        console.print(f"snapshot of {snapshot['model']} ({snapshot['backend']}): {snapshot['metrics']['examples']} "
                      f"answers, F1 {snapshot['metrics']['f1']:.2f}; written to {written}", soft_wrap=True)
