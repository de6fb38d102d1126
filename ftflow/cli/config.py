"""`ftflow config`: every effective setting with its value and where it came from."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from ftflow.cli.output import print_table
from ftflow.cli.reporting import run_reporting_errors
from ftflow.settings import get_settings


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
