"""The Prefect server processes ftflow starts when no server is configured (no PREFECT_API_URL).

Both run uvicorn on Prefect's `create_app` with the UI off, as Prefect's own temporary server
(`SubprocessASGIServer`) does, on a free local port, with the database in PREFECT_HOME:
- `TemporaryServer`: one command's, stopped at its end, and dying with it (SIGKILL included). It
  writes to `ftflow-temporary-server.log` in PREFECT_HOME, not to the command's terminal: what
  it logs (a traceback, should it be stopped mid-write) would read as the command's own failure.
  The command waits for it to store its task runs before stopping it (ftflow/prefect_api.py).
- `BackgroundServer`: started by a command for itself and the commands after it, which find it
  through `$PREFECT_HOME/ftflow-server.json`; `ftflow server stop` ends it. It runs in a session
  of its own (Ctrl-C in the terminal does not reach it) and writes to `ftflow-server.log` beside
  that file.
  One per PREFECT_HOME, i.e. per database: a lock file keeps two commands starting at once
  from starting two. One that another Prefect version started is replaced.
Both get the command's environment without API keys (ftflow.settings.SECRETS).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import importlib.util
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from ftflow.errors import FtflowError
from ftflow.process_exit import die_with_parent

# Prefect's own values for its temporary server (prefect/server/api/server.py).
SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
PORTS = range(8000, 9000)
STARTUP_FAILURE_EXIT = 3  # uvicorn's exit code when it cannot bind, and when the app fails to start
APP = "prefect.server.api.server:create_app"
STATE_FILE = "ftflow-server.json"
TEMPORARY_LOG = "ftflow-temporary-server.log"
PICK = random.Random()  # not the global generator: a program seeding it gets the same numbers with ftflow


def server_command(port: int) -> list[str]:
    spec = importlib.util.find_spec("prefect")  # its folder, without importing Prefect (a second)
    assert spec is not None and spec.origin is not None
    return [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(spec.origin).parent.parent), "--factory", APP,
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "error", "--lifespan", "on"]


def server_environment() -> dict[str, str]:
    """The command's environment without API keys (ftflow.settings.SECRETS), with Prefect's server values."""
    from ftflow.settings import SECRETS

    return {**{name: value for name, value in os.environ.items() if name not in SECRETS}, **SERVER_ENV}


def open_log(path: Path) -> int:
    """A server's log, appended to (commands may share PREFECT_HOME), readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


def free_port() -> int:
    for _ in range(50):
        port = PICK.choice(PORTS)
        if not port_taken(port):
            return port
    raise FtflowError(f"no free port for a Prefect server in {PORTS.start}-{PORTS.stop - 1}")


def port_taken(port: int) -> bool:
    with contextlib.closing(socket.socket()) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def lost_its_port(code: int | None, port: int) -> bool:
    """True if a server that ended with `code` could not bind `port` (another process took it since
    it was picked): start another. Any other start-up failure (a database it cannot open, say)
    ends with the same code, and starting again would only fail again."""
    return code == STARTUP_FAILURE_EXIT and port_taken(port)


def api_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/api"


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def startup_timeout() -> float:
    return float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120"))


class TemporaryServer:
    """A Prefect server subprocess on a free local port, booting from the moment it is made."""

    booting = True

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log_path = prefect_home() / TEMPORARY_LOG
        self._start()

    @property
    def api_url(self) -> str:
        return api_url(self.port)

    def _start(self) -> None:
        self.port = free_port()
        log = open_log(self.log_path)
        try:
            self.process = subprocess.Popen(
                server_command(self.port), env=server_environment(), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,  # a killed command (SIGKILL) leaves no server behind
            )
        finally:
            os.close(log)

    def wait_ready(self, timeout: float) -> None:
        """Return once the server answers its health check; FtflowError if it never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            code = self.process.poll()
            if lost_its_port(code, self.port):
                self._start()
                continue
            if code is not None:
                raise FtflowError(f"Prefect's temporary server exited with code {code} while starting; "
                                  f"its log: {self.log_path}")
            if healthy(self.api_url):
                return
            time.sleep(0.1)
        self.stop()
        raise FtflowError(f"Prefect's temporary server did not start within {timeout:.0f} s "
                          f"(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS); its log: {self.log_path}")

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

    def leave(self) -> None:
        """At the command's end: a temporary server ends with it."""
        self.stop()


@dataclass
class ServerRecord:
    """What `ftflow-server.json` holds about a background server."""

    pid: int
    port: int
    prefect_version: str
    started_at: float

    @property
    def api_url(self) -> str:
        return api_url(self.port)


def prefect_home() -> Path:
    return Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect")


def _prefect_version() -> str:
    return importlib.metadata.version("prefect")


def _is_server(pid: int) -> bool:
    """True if `pid` is a living Prefect server (on Linux: its command line names Prefect's app, so
    a pid the system gave to another process since is not taken for it)."""
    if not Path("/proc/self").is_dir():  # elsewhere: the pid alone
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read()
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return APP.encode() in command and state != b"Z"  # a zombie has ended, waiting to be reaped


class BackgroundServer:
    """The background server of this PREFECT_HOME: found running, or started now (`booting`)."""

    def __init__(self, record: ServerRecord, *, booting: bool) -> None:
        self.record = record
        self.booting = booting

    @property
    def api_url(self) -> str:
        return self.record.api_url

    def wait_ready(self, timeout: float) -> None:
        """Return once the server answers its health check; FtflowError if it never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if healthy(self.api_url):
                return
            if _is_server(self.record.pid):
                time.sleep(0.1)
                continue
            ended = self.record.pid
            code = _reaped(ended) if self.booting else None
            with _locked():
                # the port was taken since it was picked: start again; else the command that
                # started it may have started another since
                record = _spawn() if lost_its_port(code, self.record.port) else _living_record()
            if record is None:
                raise FtflowError(f"the background Prefect server (pid {ended}) ended while starting; "
                                  f"its log: {prefect_home() / 'ftflow-server.log'}")
            self.record = record
        raise FtflowError(f"the background Prefect server at {self.api_url} did not answer within {timeout:.0f} s "
                          "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS); `ftflow server stop` ends it")

    def stop(self) -> None:
        stop_background_server()

    def leave(self) -> None:
        """At the command's end: a background server stays for the commands after it."""


def _reaped(pid: int) -> int | None:
    """The exit code of a child of this process that has ended (reaping it), else None."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child: another command started it
        return None
    return os.waitstatus_to_exitcode(status) if done else None


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """Hold the lock on this PREFECT_HOME's background server (its record, its start, its stop)."""
    home = prefect_home()
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "ftflow-server.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read_record() -> ServerRecord | None:
    try:
        return ServerRecord(**json.loads((prefect_home() / STATE_FILE).read_text("utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def _living_record() -> ServerRecord | None:
    """The record of a background server still running, else None (a stale record is removed)."""
    record = _read_record()
    if record is not None and _is_server(record.pid):
        return record
    (prefect_home() / STATE_FILE).unlink(missing_ok=True)
    return None


def _spawn() -> ServerRecord:
    """Start a server in a session of its own, not a child the command waits for, and record it."""
    home = prefect_home()
    port = free_port()
    log = open_log(home / "ftflow-server.log")
    command = server_command(port)
    try:
        pid = os.posix_spawn(command[0], command, server_environment(), setsid=True, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, log, 1),
            (os.POSIX_SPAWN_DUP2, log, 2),
        ])
    finally:
        os.close(log)
    record = ServerRecord(pid=pid, port=port, prefect_version=_prefect_version(), started_at=time.time())
    path = home / STATE_FILE
    path.with_suffix(".tmp").write_text(json.dumps(asdict(record)), "utf-8")
    path.with_suffix(".tmp").replace(path)
    return record


def running_background_server() -> ServerRecord | None:
    """The background server of this PREFECT_HOME if one runs."""
    with _locked():
        return _living_record()


def background_server(start: bool) -> BackgroundServer | None:
    """The running background server of this PREFECT_HOME; else, with `start`, a new one (booting)."""
    with _locked():
        record = _living_record()
        if record is not None and record.prefect_version != _prefect_version():
            _stop(record)  # its client and server would disagree
            record = None
        if record is not None:
            return BackgroundServer(record, booting=False)
        if not start:
            return None
        return BackgroundServer(_spawn(), booting=True)


def stop_background_server() -> ServerRecord | None:
    """Stop this PREFECT_HOME's background server; return what it was (None: none ran)."""
    with _locked():
        record = _living_record()
        if record is not None:
            _stop(record)
        return record


def _stop(record: ServerRecord) -> None:
    """SIGTERM (the server stores what it holds and leaves), SIGKILL after 10 s."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while _is_server(record.pid) and time.monotonic() < deadline:
        _reaped(record.pid)
        time.sleep(0.05)
    if _is_server(record.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGKILL)
    _reaped(record.pid)
    (prefect_home() / STATE_FILE).unlink(missing_ok=True)
