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

Stopping a temporary server waits for it to shut down, which stores what the run sent it, but
for a task-run state its recorder was writing at that moment (docs/scheduling.md).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator

from ftflow.prefect_server import BackgroundServer, TemporaryServer, background_server, startup_timeout


class PrefectApi:
    """What `prefect_api` yields: call `connect()` after importing Prefect, before the first flow."""

    def __init__(self, server: TemporaryServer | BackgroundServer | None, announce: Callable[[], None]) -> None:
        self.server = server
        self._announce = announce
        self.connected = False
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
        if self.connected:
            _drain_prefect_workers()  # logs and events still queued reach the server before the command ends
            self._set_environment(dict(self._saved_environment))
            self.connected = False
        if self.server is not None:
            self.server.leave()


def _drain_prefect_workers() -> None:
    """Send what Prefect's log and event workers hold, as Prefect's test harness does at its end."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)


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
