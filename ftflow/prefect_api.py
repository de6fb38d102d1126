"""The Prefect API a command talks to: the configured server, else one ftflow starts early.

Without PREFECT_API_URL, Prefect starts a temporary server when the first flow runs: it first
imports its whole server package into the command's process (3 to 4 s here), then waits while
the server boots in a subprocess (another 3 to 4 s). ftflow instead uses a server process of
its own (ftflow/prefect_server.py), by the `prefect_server` setting:
- `background` (and `auto` when stderr is a terminal): the server a command before started is
  reused; if none runs, one is started in the background for this command and the ones after
  it, and the command says so on stderr;
- `auto` otherwise (scripts, CI, cron): a running background server is reused; else as
  `temporary`;
- `temporary`: a server of this command's own, stopped at its end.
A server is started before the command imports Prefect, its flows and Great Expectations, so
it boots on another core meanwhile. Once Prefect's settings can be read, `connect` either
points this process and its children at the server or, when a server is configured after all
(a Prefect profile, `prefect.toml`), stops one it started.

Before a temporary server is stopped, the command waits until it has stored the task runs its
flows sent: Prefect's server records them from events, a moment after they arrive, and a stop
cancels a write in progress for good (`wait_until_stored`, docs/scheduling.md).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
import time
from collections.abc import Callable, Iterator

from ftflow.prefect_server import BackgroundServer, TemporaryServer, background_server, startup_timeout


class PrefectApi:
    """What `prefect_api` yields: call `connect()` after importing Prefect, before the first flow."""

    def __init__(self, server: TemporaryServer | BackgroundServer | None, announce: Callable[[], None]) -> None:
        self.server = server
        self._announce = announce
        self.connected = False
        self._connected_at: datetime.datetime | None = None
        self._saved_environment: dict[str, str | None] = {}

    @property
    def booting(self) -> bool:
        """True while the command's server boots on the machine's other core (started by this command)."""
        return self.server is not None and self.server.booting

    def connect(self) -> None:
        from prefect.settings import get_current_settings

        if self.server is None or self.connected:  # configured, or connected already
            return
        if get_current_settings().api.url:  # set where only Prefect looks (a profile, prefect.toml)
            if self.server.booting:  # started for nothing
                self.server.stop()
            self.server = None
            return
        if isinstance(self.server, TemporaryServer):
            self._announce()
        self.server.wait_ready(startup_timeout())
        # No UI is served: no "View at" links to it.
        self._set_environment({"PREFECT_API_URL": self.server.api_url, "PREFECT_UI_URL": ""})
        self.connected = True
        self._connected_at = datetime.datetime.now(datetime.UTC)

    def _set_environment(self, variables: dict[str, str | None]) -> None:
        """Set (None: remove) variables for this process, every thread, and the processes it starts.

        Prefect reads its settings from the environment once; its threads (log and event
        workers, the process pool's message forwarder) see the process-wide settings, which
        `refresh_global_settings_context` reads again.
        """
        from prefect.context import refresh_global_settings_context

        for name, value in variables.items():
            self._saved_environment.setdefault(name, os.environ.get(name))
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        refresh_global_settings_context()

    def close(self) -> None:
        try:
            if self.connected:
                _drain_prefect_workers()  # logs and events still queued reach the server before the command ends
                if isinstance(self.server, TemporaryServer) and self._connected_at is not None:
                    _wait_until_task_runs_stored(self._connected_at)
                self._set_environment(dict(self._saved_environment))
                self.connected = False
        finally:  # a second Ctrl-C during the waits above still stops a temporary server
            if self.server is not None:
                self.server.leave()


def _drain_prefect_workers() -> None:
    """Send what Prefect's log and event workers hold, as Prefect's test harness does at its end."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)


FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "CRASHED"})
SETTLE_S = 0.2  # nothing new for this long: the recorder has nothing left (one write takes milliseconds)
IDLE_S = 2.0  # nothing new for this long while some are not final: nothing more is coming
BOUND_S = 10.0


def wait_until_stored(read: Callable[[], list[tuple[str, str]]], *, clock: Callable[[], float] = time.monotonic,
                      sleep: Callable[[float], None] = time.sleep) -> list[str]:
    """Poll `read`, the (task-run id, state type) pairs a server has stored, until every task run is
    final and the pairs have not changed for SETTLE_S. Return the ids still not final when it gives
    up instead: nothing changed for IDLE_S, or BOUND_S passed ([] when all were stored).

    Prefect's server records task runs from their events one at a time, in the order they were
    sent; until it has caught up, some task run shows an earlier state than its last, or is
    missing. A missing one cannot be told from one that never was, hence the settling time.
    """
    start = changed_at = clock()
    seen: list[tuple[str, str]] | None = None
    while True:
        pairs = sorted(read())
        now = clock()
        if pairs != seen:
            seen, changed_at = pairs, now
        unfinished = [task_run_id for task_run_id, state in pairs if state not in FINAL_STATES]
        if now - changed_at >= (IDLE_S if unfinished else SETTLE_S) or now - start >= BOUND_S:
            return unfinished
        sleep(0.05)


def _wait_until_task_runs_stored(since: datetime.datetime) -> None:
    """Wait until the server has stored the task runs of the flow runs that finished since `since`
    (Completed or Failed: a cancelled or crashed one may have left task runs unfinished for good)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    finished = FlowRunFilter(start_time=FlowRunFilterStartTime(after_=since - datetime.timedelta(seconds=1)),
                             state=FlowRunFilterState(type=FlowRunFilterStateType(
                                 any_=[StateType.COMPLETED, StateType.FAILED])))
    page = 200  # the server's most per request

    with get_client(sync_client=True) as client:
        def read() -> list[tuple[str, str]]:
            pairs: list[tuple[str, str]] = []
            while True:
                batch = client.read_task_runs(flow_run_filter=finished, limit=page, offset=len(pairs))
                pairs += [(str(run.id), run.state_type.value if run.state_type else "") for run in batch]
                if len(batch) < page:
                    return pairs

        try:
            unfinished = wait_until_stored(read)
        except Exception as error:  # noqa: BLE001 - the run is over; a server that stopped answering keeps it no longer
            print(f"could not ask Prefect's temporary server whether it stored every task run: {error}",
                  file=sys.stderr, flush=True)
            return
    if unfinished:
        print(f"Prefect's temporary server still shows {len(unfinished)} task run(s) of this command unfinished "
              f"after waiting for it; they stay so in its database (docs/scheduling.md)", file=sys.stderr, flush=True)


def _configured() -> bool:
    """True when PREFECT_API_URL is set: in the environment, or in settings already loaded."""
    if os.environ.get("PREFECT_API_URL"):
        return True
    if "prefect.settings" in sys.modules:  # loaded already (a test harness, say): asking costs nothing
        from prefect.settings import get_current_settings

        return bool(get_current_settings().api.url)
    return False


def _server() -> TemporaryServer | BackgroundServer:
    """The server this command uses, by the `prefect_server` setting (see the module docstring)."""
    mode = _server_mode()
    if mode != "temporary":
        server = background_server(start=mode == "background" or sys.stderr.isatty())
        if server is not None:
            if server.booting:  # said at once: the command may yet be killed before it ends
                print(f"started a Prefect server at {server.api_url} for later runs; `ftflow server stop` ends it",
                      file=sys.stderr, flush=True)
            return server
    return TemporaryServer()


def _server_mode() -> str:
    from ftflow.errors import ConfigError
    from ftflow.settings import get_settings

    try:
        return get_settings().prefect_server
    except ConfigError:  # the command reports it when it reads its settings; nothing stays meanwhile
        return "temporary"


@contextlib.contextmanager
def prefect_api(announce: Callable[[], None]) -> Iterator[PrefectApi]:
    """Start or find a Prefect server now unless PREFECT_API_URL is set; stop a temporary one at the end.

    `announce` is called when a temporary server is used, to say why the first seconds pass.
    """
    api = PrefectApi(None if _configured() else _server(), announce)
    try:
        yield api
    finally:
        api.close()
