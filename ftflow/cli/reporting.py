"""Errors to exit codes: an expected error (ftflow.errors) ends a command with its class's exit
code and one line on stderr; Prefect's own report of a failed run stays in the run log."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import typer

from ftflow.cli.output import print_error
from ftflow.errors import EnvironmentFailure, FtflowError

T = TypeVar("T")


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
