"""A fork server for the tests' `python` processes: ftflow's commands, flows, Prefect and Great
Expectations imported once, then a forked child per process a test starts.

Why: the chaos tests and a few others start `ftflow` as real processes (killed at named points,
stopped, run side by side), and each fresh interpreter spent about 7 s of CPU on imports before
any work. A forked child has them imported already, yet is a process of its own: its own pid,
exit status, stdout and stderr, so a SIGKILL to it tests the product as one to a fresh
interpreter does. `ForkServer.popen` stands in for `subprocess.Popen([sys.executable, ...])`.

A child gets what `python SCRIPT|-c CODE|-m MODULE ARGS...` would: the given environment
(os.environ), working directory, stdout and stderr (file descriptors passed over the server's
Unix socket), `sys.argv`, `sys.path[0]`, a `__main__` module of its own, its own random seed
(`random` reseeds in a forked child) and its own exit hooks (it exits as `python` does).
Where it differs from a fresh interpreter:
- Prefect and the other libraries read their settings from the environment when the server
  imported them: a child's environment may differ from the server's only in FTFLOW_* variables
  (ftflow reads them when it builds its settings, ftflow.settings.get_settings) and
  PYTEST_CURRENT_TEST; `popen` refuses others.
- Great Expectations is imported already, so a command runs its quality suites in its own
  process, not in one of their own (ftflow.suites_process.imported). test_suites_process.py and
  the signal tests (chaos/test_signals.py) keep fresh interpreters for that process.
- All children share the server's hash seed (PYTHONHASHSEED).

The server is one thread and checks that its imports started no other: a fork copies only the
forking thread, so a lock another thread held would stay held in the child. It makes no Prefect
client, event loop or log worker and no database engine before forking; nothing it imports does.

One connection per child: the client sends a JSON request (argv, env, cwd) with the descriptors
of the child's stdout and stderr (socket.send_fds), the server forks and answers a line with the
child's pid, then a line with its exit code (os.waitstatus_to_exitcode: -9 after a SIGKILL).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

# The commands (`python -m ftflow.cli`, tests/integration/chaos/killpoint.py), their flows and tasks
# (imported by the commands only when they run), Prefect, and GX with the quality suites' code.
PRELOAD = ("ftflow.cli", "flows.prepare", "flows.retrain", "flows.finetune", "flows.snapshot_eval",
           "great_expectations", "tasks.suites")
UNCHECKED = ("FTFLOW_", "PYTEST_CURRENT_TEST")  # variables a child may set unlike the server
STARTUP_SECONDS = 300  # imports on a loaded machine can take minutes


def _differing(server_env: dict[str, str], env: dict[str, str]) -> list[str]:
    names = server_env.keys() | env.keys()
    return sorted(n for n in names if server_env.get(n) != env.get(n) and not n.startswith(UNCHECKED))


def _text(output: bytes) -> str:
    """Output as `subprocess.Popen(..., text=True)` gives it: decoded, universal newlines."""
    return output.decode().replace("\r\n", "\n").replace("\r", "\n")


class ForkedProcess:
    """A fork server's child, as `subprocess.Popen` shows a process to the tests: pid, poll, wait,
    communicate, kill, terminate, returncode (-N after signal N)."""

    def __init__(self, args: list[str], connection: socket.socket, stdout: IO[str], stderr: IO[str] | None) -> None:
        self.args = args
        self._answers = connection.makefile("r")
        self._connection = connection
        self.stdout = stdout
        self.stderr = stderr
        self.pid = int(self._answers.readline())
        self.returncode: int | None = None
        # What communicate has read from each pipe; a pipe read to its end is closed.
        self._read: dict[IO[str], list[bytes]] = {stream: [] for stream in (stdout, stderr) if stream is not None}

    def poll(self) -> int | None:
        if self.returncode is None and select.select([self._connection], [], [], 0)[0]:
            self._read_exit()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if not select.select([self._connection], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            self._read_exit()
        assert self.returncode is not None
        return self.returncode

    def _read_exit(self) -> None:
        answer = self._answers.readline()
        if not answer:
            raise RuntimeError(f"the fork server ended before its child {self.pid}")
        self.returncode = int(answer)
        self._answers.close()
        self._connection.close()

    def communicate(self, timeout: float | None = None) -> tuple[str, str | None]:
        """Read stdout (and stderr, if a pipe of its own) to their ends, then wait, within `timeout`;
        after a TimeoutExpired, a call again goes on reading where this one stopped."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while open_streams := [stream for stream in self._read if not stream.closed]:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = select.select(open_streams, [], [], left)[0]
            if not ready:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            for stream in ready:
                if chunk := os.read(stream.fileno(), 65536):
                    self._read[stream].append(chunk)
                else:
                    stream.close()
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        out = _text(b"".join(self._read[self.stdout]))
        return out, None if self.stderr is None else _text(b"".join(self._read[self.stderr]))

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:  # not yet reaped by the server: the pid is still the child's
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


class ForkServer:
    """Starts the server (`python -m tests.forkserver SOCKET`) with `env` and `cwd` and forks its children."""

    def __init__(self, env: dict[str, str], cwd: Path, folder: Path) -> None:
        self.env = dict(env)
        self.socket_path = str(folder / "forkserver.sock")
        self.log_path = folder / "forkserver.log"
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen([sys.executable, "-m", "tests.forkserver", self.socket_path], env=self.env,
                                             cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + STARTUP_SECONDS
        while not os.path.exists(self.socket_path):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"the fork server did not start: {self.log_path.read_text()[-3000:]}")
            time.sleep(0.1)

    @property
    def pid(self) -> int:
        return self._process.pid

    def popen(self, args: list[str], *, env: dict[str, str], cwd: Path | str,
              stderr: int = subprocess.STDOUT) -> ForkedProcess:
        """A child running `args` (sys.executable and a script, -c or -m) as `subprocess.Popen(args,
        env=env, cwd=cwd, stdout=PIPE, stderr=stderr, text=True)` would, stderr PIPE or STDOUT."""
        if args[0] != sys.executable:
            raise ValueError(f"a fork server runs Python only, not {args[0]}")
        if differing := _differing(self.env, env):
            raise ValueError(f"a child's environment may differ from the fork server's in FTFLOW_* only: {differing}")
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe() if stderr == subprocess.PIPE else (None, out_write)
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            connection.connect(self.socket_path)
            request = json.dumps({"argv": args[1:], "env": env, "cwd": str(cwd)}).encode()
            socket.send_fds(connection, [request], [out_write, err_write])
            connection.shutdown(socket.SHUT_WR)
        finally:
            os.close(out_write)
            if err_read is not None:
                os.close(err_write)
        return ForkedProcess(args, connection, open(out_read), None if err_read is None else open(err_read))

    def close(self) -> None:
        self._process.terminate()
        self._process.wait(30)
        Path(self.socket_path).unlink(missing_ok=True)


# --- the server -------------------------------------------------------------------------------

def _receive(connection: socket.socket) -> tuple[dict[str, Any], list[int]]:
    data, fds, _, _ = socket.recv_fds(connection, 1 << 20, 2)
    while chunk := connection.recv(1 << 20):
        data += chunk
    return json.loads(data), fds


def serve(socket_path: str) -> tuple[dict[str, Any], list[int]]:
    """Import, then fork a child per request; returns in a child only, with its request and descriptors."""
    import gc
    import importlib
    import threading

    for module in PRELOAD:
        importlib.import_module(module)
    if others := [t.name for t in threading.enumerate() if t is not threading.main_thread()]:
        raise RuntimeError(f"threads started by the imports would be missing in a forked child: {others}")
    # The imported objects out of the collector's sight: a child's collections neither walk them
    # (nor copy their memory pages by touching them) nor, at its exit, free them one by one.
    gc.freeze()
    parent = os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path + ".new")
    listener.listen(16)
    os.rename(socket_path + ".new", socket_path)  # the client waits for this name: it accepts from now on
    children: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> the child's pid, its client's connection
    while os.getppid() == parent:  # the tests' process is gone: so is their use for a server
        for ready in select.select([listener, *children], [], [], 1.0)[0]:
            if ready is listener:
                connection, _ = listener.accept()
                request, fds = _receive(connection)
                sys.stdout.flush()  # else the child would write what the server buffered
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    listener.close()
                    for pidfd, (_, other) in children.items():
                        os.close(pidfd)
                        other.close()
                    connection.close()
                    return request, fds
                for fd in fds:
                    os.close(fd)
                children[os.pidfd_open(pid)] = (pid, connection)
                connection.sendall(f"{pid}\n".encode())
            else:
                pid, connection = children.pop(ready)
                os.close(ready)
                _, status = os.waitpid(pid, 0)
                with contextlib.suppress(OSError):  # the client went away (a test that failed before waiting)
                    connection.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
                connection.close()
    raise SystemExit(0)


def become(request: dict[str, Any], fds: list[int]) -> None:
    """In the child: take the request's environment, directory and output, then run its argv as `python` would."""
    import runpy
    import types

    os.dup2(fds[0], 1)
    os.dup2(fds[1], 2)
    for fd in set(fds):
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    argv: list[str] = request["argv"]
    if argv[0] == "-c":
        sys.argv, sys.path[0] = ["-c", *argv[2:]], ""
        main = types.ModuleType("__main__")
        sys.modules["__main__"] = main
        exec(compile(argv[1], "<string>", "exec"), main.__dict__)  # noqa: S102 - what `python -c` does
    elif argv[0] == "-m":
        sys.argv, sys.path[0] = [argv[1], *argv[2:]], os.getcwd()
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv, sys.path[0] = list(argv), os.path.dirname(os.path.abspath(argv[0]))
        runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    become(*serve(sys.argv[1]))  # in a child: it then exits as `python` does, running its exit hooks
