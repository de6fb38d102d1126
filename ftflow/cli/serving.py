"""The commands that keep running in the foreground: serve (the deployments) and service (the local one)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ftflow.cli.output import console
from ftflow.cli.reporting import run_reporting_errors
from ftflow.settings import get_settings


def serve() -> None:
    """Serve the deployments of prefect.yaml on this machine (schedules included), no worker needed."""
    from prefect import serve as prefect_serve

    from ftflow.deployments import load_deployments

    prefect_serve(*run_reporting_errors(load_deployments))


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
