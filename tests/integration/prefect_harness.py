"""The integration tests' Prefect server: Prefect's own test harness, its database on PostgreSQL.

`prefect.testing.utilities.prefect_test_harness` puts the server's database in a temporary
SQLite file. Served through aiosqlite (every query handed to a thread of its own) it makes
each flow or task state a slow round trip, and under load SQLite's single writer turns
concurrent runs into 503s. The PostgreSQL every machine here runs (the one the `postgres`
tests use) serves the same API about twice as fast per `prepare` (docs/testing.md). So
`prefect_test_server` does what the harness does, with the database in a PostgreSQL database
of its own (created here, dropped after), and falls back to the harness itself, saying so, where
no PostgreSQL answers.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import uuid
import warnings
from collections.abc import Iterator

from tests.conftest import postgres_url

PREFIX = "ftflow_prefect_test_"  # then the pid of the test process that made it


@contextlib.contextmanager
def prefect_test_server(startup_timeout: int = 300) -> Iterator[None]:
    """A temporary Prefect server for this process's flows, its database on PostgreSQL (else SQLite)."""
    import sqlalchemy as sa
    from prefect.testing.utilities import prefect_test_harness

    admin = sa.create_engine(postgres_url()).execution_options(isolation_level="AUTOCOMMIT")
    try:
        admin.connect().close()
    except sa.exc.OperationalError as exc:
        warnings.warn(f"no PostgreSQL at {postgres_url()} ({exc.orig}): the tests' Prefect server runs on "
                      "SQLite, slower and prone to 503s under load", stacklevel=3)
        with prefect_test_harness(server_startup_timeout=startup_timeout):
            yield
        return
    database = f"{PREFIX}{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        _drop_orphans(conn)
        conn.execute(sa.text(f'CREATE DATABASE "{database}"'))
    try:
        url = sa.engine.make_url(postgres_url()).set(drivername="postgresql+asyncpg", database=database)
        with _harness_on(url.render_as_string(hide_password=False), startup_timeout):
            yield
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def _harness_on(database_url: str, startup_timeout: int) -> Iterator[None]:
    """`prefect_test_harness`'s steps (Prefect 3.9) with the given database: a server subprocess,
    registered as the default one so no flow starts another, its URL as this process's API, and the
    log and event workers drained before it stops."""
    import prefect.context
    import prefect.settings
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.server.database.dependencies import temporary_database_interface
    from prefect.testing.utilities import _find_available_port
    from prefect.utilities.asyncutils import run_coro_as_sync

    # No test reads the events feed or sets an automation: the services that store every event and
    # match it against automations stay off (about a tenth of this server's CPU in the suite).
    # The task-run recorder, which turns events into the task runs the tests read, stays on, and
    # writes them in batches, at least once a second, not one transaction per event (the tests
    # that read task runs wait for them: they reach the server after the flow run anyway).
    quiet_services = {prefect.settings.PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED: False,
                      prefect.settings.PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED: False,
                      prefect.settings.PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE: 200,
                      prefect.settings.PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL: 1}
    with temporary_database_interface(), prefect.settings.temporary_settings(
            updates={prefect.settings.PREFECT_SERVER_DATABASE_CONNECTION_URL: database_url, **quiet_services}):
        server = SubprocessASGIServer(port=_find_available_port())
        prior_default = SubprocessASGIServer._instances.get(None)
        SubprocessASGIServer._instances[None] = server
        try:
            server.start(timeout=startup_timeout)
            with prefect.settings.temporary_settings(updates={prefect.settings.PREFECT_API_URL: server.api_url}), \
                    prefect.context._temporary_global_settings_context(prefect.context.get_settings_context()):
                try:
                    yield
                finally:
                    run_coro_as_sync(_drain_workers())
        finally:
            server.stop()
            if prior_default is not None:
                SubprocessASGIServer._instances[None] = prior_default
            else:
                SubprocessASGIServer._instances.pop(None, None)


async def _drain_workers() -> None:
    """Prefect's log and event workers written out (in a loop each returns an awaitable)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    with contextlib.suppress(RuntimeError):  # the log worker never started
        await _settled(APILogWorker.instance().drain())
    await _settled(EventsWorker.drain_all())


async def _settled(result: object) -> object:
    return await result if inspect.isawaitable(result) else result


def _drop_orphans(conn) -> None:
    """Drop the databases of test processes that no longer run (killed before their clean-up)."""
    import sqlalchemy as sa

    names = conn.execute(sa.text("SELECT datname FROM pg_database WHERE datname LIKE :prefix"),
                         {"prefix": PREFIX + "%"}).scalars().all()
    for name in names:
        pid = name.removeprefix(PREFIX).split("_")[0]
        if pid.isdigit() and not _running(int(pid)):
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's
        return True
    return True
