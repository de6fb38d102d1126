"""A real Prefect stack for the UI tests and bench/ui_screenshots.py: server, work pool, worker.

Everything binds 127.0.0.1 on a free port and keeps its state under one folder. The server
gets PREFECT_API_URL in its environment, so the UI it serves talks to this server and not
to the default port 4200.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrefectStack:
    """`with PrefectStack(folder) as stack:` a server; `deploy()`, `start_worker()`, `run()` as needed."""

    def __init__(self, folder: Path, *, database_url: str | None = None, worker_env: dict[str, str] | None = None):
        self.folder = folder
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.ui_url = f"http://127.0.0.1:{self.port}"
        self.pool = "ftflow"  # as in prefect.yaml; the server is this stack's own
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        self.env.update(PREFECT_HOME=str(folder / "prefect"), PREFECT_API_URL=self.api_url,
                        PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_TELEMETRY_ENABLE_RESOURCE_METRICS="false",
                        FTFLOW_PROJECT_DIR=str(ROOT))
        if database_url:
            self.env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database_url
        self.worker_env = worker_env or {}
        self.processes: list[subprocess.Popen] = []
        self.logs: list[Any] = []

    def _spawn(self, args: list[str], log: str, env: dict[str, str]) -> subprocess.Popen:
        out = open(self.folder / log, "wb")  # noqa: SIM115 - closed in __exit__, after the process
        self.logs.append(out)
        process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.processes.append(process)
        return process

    def prefect(self, *args: str, timeout: float = 180) -> str:
        done = subprocess.run([str(BIN / "prefect"), *args], cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        if done.returncode:
            raise RuntimeError(f"prefect {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout + done.stderr

    def __enter__(self) -> PrefectStack:
        self.folder.mkdir(parents=True, exist_ok=True)
        server = self._spawn([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                              str(self.port)], "server.log", self.env)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(f"prefect server exited: {(self.folder / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.api_url}/health", timeout=5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(1)
        self.__exit__()
        raise RuntimeError(f"prefect server did not answer within 240 s on {self.api_url}")

    def __exit__(self, *exc: Any) -> None:
        for process in reversed(self.processes):  # the worker before the server it reports to
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    # Each stops in under a second, but in the full suite Prefect's worker has now
                    # and then not ended on SIGTERM at all (its log stops at "Sending SIGINT to the
                    # process worker"): a longer grace only waited longer (30 s before).
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        for log in self.logs:
            log.close()

    def deploy(self) -> str:
        """The README's way: a process work pool, then `prefect deploy --all` from prefect.yaml."""
        self.prefect("work-pool", "create", self.pool, "--type", "process")
        return self.prefect("--no-prompt", "deploy", "--all")

    def start_worker(self) -> None:
        env = {**self.env, **self.worker_env}
        self._spawn([str(BIN / "prefect"), "worker", "start", "--pool", self.pool], "worker.log", env)

    def run(self, deployment: str, parameters: dict[str, Any] | None = None, timeout: float = 600) -> Any:
        """Trigger a deployment run and wait for its end; return the flow run."""
        with self.client() as client:
            found = client.read_deployment_by_name(deployment)
            flow_run = client.create_flow_run_from_deployment(found.id, parameters=parameters or {})
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                flow_run = client.read_flow_run(flow_run.id)
                if flow_run.state and flow_run.state.type.value in FINAL:
                    return flow_run
                time.sleep(2)
        raise AssertionError(f"flow run {flow_run.id} still {flow_run.state} after {timeout} s; "
                             f"worker log: {(self.folder / 'worker.log').read_text()[-3000:]}")

    def client(self) -> Any:
        from prefect.client.orchestration import SyncPrefectClient

        return SyncPrefectClient(self.api_url)
