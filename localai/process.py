"""The service in a process of its own, for the length of its parent: `ServiceProcess` (the
parent's side) and `python -m localai.process` (the child's).

The parent side imports neither uvicorn nor the app: the point is to keep their import, and the
requests' CPU, off the parent's interpreter.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading

from localai.config import ServiceConfig, with_key


class ServiceProcess:
    """The service in a child process that lives as long as this process holds it open;
    `base_url` and `api_key` as LocalService's.

    The child's requests (classifying moderation texts, answering chats, advancing jobs) then
    use a core of their own, not this process's interpreter: on 100,000 examples the moderation
    pre-check took 12-13 s against 19-22 s with the service on a thread of the pipeline
    (docs/moderation.md). The child (`main`, below) reads its config, key included, from
    its stdin (never its arguments or environment, which other users can list), answers with
    its port once it serves, and stops when that pipe closes: when this process stops it or
    ends, however it ends. Its own session keeps a terminal's Ctrl-C to the command, which
    then closes the pipe.
    """

    def __init__(self, config: ServiceConfig | None = None) -> None:
        self.config = with_key(config or ServiceConfig())
        self.host = "127.0.0.1"
        self.port: int | None = None
        self._lock = threading.Lock()  # one reader of the child's answer
        self._process = subprocess.Popen([sys.executable, "-m", "localai.process"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, start_new_session=True)
        assert self._process.stdin is not None
        self._process.stdin.write(self.config.model_dump_json().encode() + b"\n")
        self._process.stdin.flush()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.wait_started().port}/v1"

    @property
    def api_key(self) -> str:
        assert self.config.api_key
        return self.config.api_key

    @property
    def pid(self) -> int:
        return self._process.pid

    def wait_started(self, timeout: float = 60.0) -> ServiceProcess:
        """Return once the child serves (at once if it did already)."""
        with self._lock:
            if self.port is None:
                stdout = self._process.stdout
                assert stdout is not None
                ready, _, _ = select.select([stdout], [], [], timeout)
                line = stdout.readline() if ready else b""
                if not line.strip().isdigit():
                    self.stop()
                    why = f"exit code {self._process.returncode}" if ready else f"no answer within {timeout:.0f} s"
                    raise RuntimeError(f"the local service did not start ({why}; its errors are above)")
                self.port = int(line)
        return self

    def stop(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            self._process.stdin.close()  # the child's signal to stop
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        for pipe in (self._process.stdin, self._process.stdout):
            if pipe is not None:
                pipe.close()


def main() -> None:
    """The child: the config (the key with it) on the first line of stdin, the port on stdout
    once serving; it stops when stdin closes (the parent stopped it, or ended)."""
    from localai.server import LocalService

    line = sys.stdin.readline()
    if not line:  # the parent ended before it sent the config
        return
    service = LocalService(ServiceConfig(**json.loads(line))).start()
    sys.stdout.write(f"{service.port}\n")
    sys.stdout.flush()
    os.dup2(2, 1)  # anything printed later goes with the errors, not into a pipe nobody reads
    sys.stdin.read()  # until the parent closes the pipe
    service.stop()


if __name__ == "__main__":
    main()
