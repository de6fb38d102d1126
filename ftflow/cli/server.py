"""server status|stop: the Prefect server ftflow leaves running for later commands (setting prefect_server)."""

from __future__ import annotations

import typer

from ftflow.cli.output import console

server_app = typer.Typer(help="The Prefect server ftflow leaves running for later commands (setting prefect_server).")


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
