"""SQL: message-per-row results of a query, from a SQLAlchemy URL, grouped as tables are.

The source is given in the options (`sql_url`, `query`), not as a path. Rows are streamed with
a server-side cursor in `fetchmany` batches, ordered by conversation and turn. The password
never appears in a message, a log or a report: URLs are shown as SQLAlchemy redacts them, and
`env:NAME` reads the URL from an environment variable (how the CLI keeps it out of flow-run
parameters).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ftflow.errors import InputError
from tasks.readers import ExtractOptions, Item
from tasks.readers.table import check_columns, group_rows

if TYPE_CHECKING:  # SQLAlchemy is imported by the SQL source alone (a fifth of a second at start-up)
    import sqlalchemy as sa


def parse_sql_url(url: str) -> sa.URL:
    """A SQLAlchemy URL whose dialect and driver are installed; InputError saying what is wrong otherwise.

    Messages never include the password: they name the URL as redacted by SQLAlchemy.
    """
    import sqlalchemy as sa

    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise InputError(
            "--sql-url is not a database URL (expected dialect+driver://user@host/database, "
            "e.g. postgresql+psycopg://user@localhost/db or sqlite:///file.db)"
        ) from None
    shown = parsed.render_as_string(hide_password=True)
    try:
        parsed.get_dialect().import_dbapi()
    except sa.exc.NoSuchModuleError:
        raise InputError(f"--sql-url {shown}: unknown database dialect {parsed.drivername!r}") from None
    except ImportError as exc:
        raise InputError(f"--sql-url {shown}: the driver is not installed ({exc})") from None
    return parsed


def redact_url(url: str) -> str:
    """A database URL without its password, fit for logs and reports."""
    return parse_sql_url(url).render_as_string(hide_password=True)


def resolved_sql_url(options: ExtractOptions) -> str:
    """The URL itself, or for `env:NAME` the URL in that variable (how the CLI hides passwords)."""
    url = options.sql_url or ""
    if url.startswith("env:"):
        name = url.removeprefix("env:")
        if name not in os.environ:
            raise InputError(f"--sql-url points to ${name}, which is not set")
        return os.environ[name]
    return url


def sql_source_name(options: ExtractOptions) -> str:
    return f"sql:{redact_url(resolved_sql_url(options))}"


def read_sql(options: ExtractOptions) -> Iterator[Item]:
    """Run the query ordered by conversation and turn; stream rows with a server-side cursor."""
    if not options.sql_url or not options.query:
        raise InputError("SQL extraction needs both --sql-url and --query")
    import sqlalchemy as sa

    source = sql_source_name(options)
    engine = sa.create_engine(parse_sql_url(resolved_sql_url(options)))
    prep = engine.dialect.identifier_preparer
    ordered = sa.text(
        f"SELECT * FROM ({options.query.rstrip().rstrip(';')}) AS ftflow_source "
        f"ORDER BY {prep.quote(options.id_column)}, {prep.quote(options.order_column)}"
    )
    try:
        with engine.connect() as conn:
            result = conn.execution_options(stream_results=True).execute(ordered)
            check_columns(list(result.keys()), source, options)

            def rows() -> Iterator[tuple[str, dict[str, Any]]]:
                number = 1
                while batch := result.mappings().fetchmany(options.batch_size):
                    for row in batch:
                        yield f"row {number}", dict(row)
                        number += 1

            yield from group_rows(rows(), source, options)
    except sa.exc.SQLAlchemyError as exc:
        raise InputError(f"{source}: query failed: {exc.__class__.__name__}: {exc.orig or exc}") from None
    finally:
        engine.dispose()
