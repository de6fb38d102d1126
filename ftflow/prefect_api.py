"""The Prefect API a command talks to: the configured server, or a temporary one started early.

Without PREFECT_API_URL, Prefect starts a temporary server when the first flow runs: it first
imports its whole server package into the command's process (3 to 4 s here), then waits while
the server boots in a subprocess (another 3 to 4 s). ftflow starts that same subprocess itself
(uvicorn on `prefect.server.api.server:create_app` with the UI off, as Prefect's
`SubprocessASGIServer` does) before the command imports Prefect, its flows and Great
Expectations, so the server boots on another core meanwhile. Once Prefect's settings can be
read, `connect` either points this process and its children at the server or, when a server
is configured after all (a Prefect profile, `prefect.toml`), stops the unneeded one.

Stopping waits for the server to shut down, which stores what the run sent it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from ftflow.errors import FtflowError
from ftflow.process_exit import die_with_parent

# Prefect's own values for its temporary server (prefect/server/api/server.py).
SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
PORTS = range(8000, 9000)
PORT_IN_USE_EXIT = 3  # uvicorn's exit code when it cannot bind


class TemporaryServer:
    """A Prefect server subprocess on a free local port, booting from the moment it is made."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._start()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def _start(self) -> None:
        self.port = _free_port()
        spec = importlib.util.find_spec("prefect")  # its folder, without importing Prefect (a second)
        assert spec is not None and spec.origin is not None
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(spec.origin).parent.parent), "--factory",
             "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "error", "--lifespan", "on"],
            env={**os.environ, **SERVER_ENV},
            preexec_fn=die_with_parent,  # a killed command (SIGKILL) leaves no server behind
        )

    def wait_ready(self, timeout: float) -> None:
        """Return once the server answers its health check; FtflowError if it never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            code = self.process.poll()
            if code == PORT_IN_USE_EXIT:  # another process took the port since it was picked
                self._start()
                continue
            if code is not None:
                raise FtflowError(f"Prefect's temporary server exited with code {code} while starting")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise FtflowError(f"Prefect's temporary server did not start within {timeout:.0f} s "
                          "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


def _free_port() -> int:
    for _ in range(50):
        port = random.choice(PORTS)
        with contextlib.closing(socket.socket()) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise FtflowError(f"no free port for Prefect's temporary server in {PORTS.start}-{PORTS.stop - 1}")


class PrefectApi:
    """What `prefect_api` yields: call `connect()` after importing Prefect, before the first flow."""

    def __init__(self, server: TemporaryServer | None, announce: Callable[[], None]) -> None:
        self.server = server
        self._announce = announce
        self.connected = False
        self._saved_environment: dict[str, str | None] = {}

    def connect(self) -> None:
        from prefect.settings import get_current_settings

        if self.server is None or self.connected:  # configured, or connected already
            return
        if get_current_settings().api.url:  # set where only Prefect looks (a profile, prefect.toml)
            self.server.stop()
            self.server = None
            return
        self._announce()
        self.server.wait_ready(float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")))
        # No UI is served, and the server stops with the command: no "View at" links to it.
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
            _drain_prefect_workers()  # logs and events still queued go to the server before it stops
            self._set_environment(dict(self._saved_environment))
            self.connected = False
        if self.server is not None:
            self.server.stop()


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


@contextlib.contextmanager
def prefect_api(announce: Callable[[], None]) -> Iterator[PrefectApi]:
    """Start a temporary Prefect server now unless PREFECT_API_URL is set; stop it at the end.

    `announce` is called when the temporary server is used, to say why the first seconds pass.
    """
    server = None if _configured() else TemporaryServer()
    api = PrefectApi(server, announce)
    try:
        yield api
    finally:
        api.close()
