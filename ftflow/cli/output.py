"""What the commands print: rich tables as wide as their ids need, and the one `error: ...` line."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


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


def kv_table(title: str, rows: list[tuple[str, Any]]) -> Table:
    """A two-column table of figures; values wrap between words, never inside one (a model id, a path)."""
    longest_word = max((len(word) for _, value in rows for word in str(value).split()), default=1)
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(min_width=longest_word)
    for key, value in rows:
        table.add_row(key, str(value))
    return table


def print_error(exc: BaseException) -> None:
    """The one `error: ...` line: a message over several lines is joined, never cut."""
    from rich.markup import escape

    message = " ".join(str(exc).split())
    err_console.print(f"[bold red]error[/]: {escape(message)}", highlight=False, soft_wrap=True)


def announce_prefect_server() -> None:
    """Say why the first seconds pass quietly: without PREFECT_API_URL a temporary server starts."""
    console.print(  # on stdout: stderr is kept for the one error line
        "PREFECT_API_URL is not set: starting a temporary Prefect server (a few seconds). To keep one running for "
        "later commands: FTFLOW_PREFECT_SERVER=background (setting prefect_server)",
        style="dim", highlight=False, soft_wrap=True)
