"""The database under the ledger and the lineage store: one engine per URL, tables on first use, upsert.

SQLAlchemy Core; SQLite by default, PostgreSQL by URL. Every write is a real upsert
(`INSERT ... ON CONFLICT DO UPDATE`), never delete-then-insert. Each store declares its
tables on a `MetaData` of its own; `open_tables` creates them (and the columns newer ftflow
versions added) once per URL and process, so databases written by older versions keep working.
"""

from __future__ import annotations

import time
from functools import cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url


@cache
def engine_for(url: str) -> sa.Engine:
    """The one engine (connection pool) of a database URL in this process."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # Concurrent runs (threads and processes) write the same file: wait for the lock, do not fail.
        return sa.create_engine(url, connect_args={"timeout": 60})
    return sa.create_engine(url, pool_pre_ping=True)


def add_missing_columns(engine: sa.Engine, metadata: sa.MetaData) -> None:
    """Tables written by older ftflow versions get the new (nullable) columns."""
    inspector = sa.inspect(engine)
    with engine.begin() as conn:
        for table in metadata.sorted_tables:
            present = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name not in present:
                    kind = column.type.compile(dialect=engine.dialect)
                    conn.execute(sa.text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))


@cache
def open_tables(url: str, metadata: sa.MetaData) -> sa.Engine:
    """The engine of `url`, with the tables of `metadata` created and up to date (once per process)."""
    engine = engine_for(url)
    for attempt in range(5):
        try:
            metadata.create_all(engine)
            add_missing_columns(engine, metadata)
            break
        except sa.exc.DBAPIError:  # another process created the same table a moment ago: look again
            if attempt == 4:
                raise
            time.sleep(0.1 * (attempt + 1))
    return engine


def upsert(conn: sa.Connection, table: sa.Table, values: dict[str, Any], *, update: dict[str, Any] | None = None,
           ) -> None:
    """INSERT ... ON CONFLICT (primary key) DO UPDATE SET `update` (default: every non-key value)."""
    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table).values(**values)
    keys = [c.name for c in table.primary_key.columns]
    changes = update if update is not None else {k: v for k, v in values.items() if k not in keys}
    conn.execute(insert.on_conflict_do_update(index_elements=keys, set_=changes) if changes
                 else insert.on_conflict_do_nothing(index_elements=keys))
