"""Chaos fixtures: a real service process, real `ftflow` processes, one Prefect server, one registry."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest

from localai.server import free_port
from tests.conftest import ROOT
from tests.forkserver import ForkedProcess, ForkServer

KILLPOINT = Path(__file__).with_name("killpoint.py")


@pytest.fixture(scope="session")
def prefect_api(prefect_server):
    from prefect.settings import get_current_settings

    return str(get_current_settings().api.url)


@dataclass
class Service:
    process: subprocess.Popen
    url: str
    key: str

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=self.key, max_retries=3)

    def set_faults(self, rules: dict, seed: int = 1) -> None:
        response = httpx.put(f"{self.url}/_admin/faults", json={"seed": seed, "rules": rules},
                             headers={"Authorization": f"Bearer {self.key}"})
        assert response.status_code == 200, response.text

    def injected(self) -> dict:
        return httpx.get(f"{self.url}/_admin/faults", headers={"Authorization": f"Bearer {self.key}"}).json()["injected"]


@pytest.fixture
def service(tmp_path):
    """The local service as its own process (`python -m localai`), on a free port."""
    port = free_port()
    key = f"sk-chaos-{secrets.token_hex(8)}"
    env = {**os.environ, "FTFLOW_SERVICE_API_KEY": key, "FTFLOW_SERVICE_SECONDS_PER_1K_TOKENS": "0.002",
           "FTFLOW_SERVICE_TICK_SECONDS": "0.05"}
    process = subprocess.Popen([sys.executable, "-m", "localai", "--port", str(port), "--data-dir",
                                str(tmp_path / "service")], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    service = Service(process, f"http://127.0.0.1:{port}", key)
    deadline = time.monotonic() + 60
    while True:
        try:
            service.client().models.list()
            break
        except openai.APIConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("the local service did not start") from None
            time.sleep(0.2)
    yield service
    process.terminate()
    process.wait(10)


@dataclass
class Pipeline:
    """Runs `ftflow` as real processes (forked from the fork server) against one service, one
    registry, one Prefect server."""

    service: Service
    prefect_api: str
    fork_server: ForkServer
    folder: Path
    settings_env: dict = field(default_factory=dict)
    started: list = field(default_factory=list)

    @property
    def registry_url(self) -> str:
        return f"sqlite:///{self.folder / 'registry.sqlite3'}"

    def env(self, kill_at: str | None = None) -> dict:
        env = {**os.environ, "PREFECT_API_URL": self.prefect_api, "FTFLOW_SERVICE_URL": self.service.base_url,
               "FTFLOW_SERVICE_API_KEY": self.service.key, "FTFLOW_REGISTRY_URL": self.registry_url,
               "FTFLOW_POLL_INITIAL_SECONDS": "0.05", "FTFLOW_POLL_MAX_SECONDS": "0.2",
               "FTFLOW_LOOKUP_DEADLINE_SECONDS": "8", "FTFLOW_LEASE_SECONDS": "5", **self.settings_env}
        env.pop("FTFLOW_CHAOS_KILL_AT", None)
        if kill_at:
            env["FTFLOW_CHAOS_KILL_AT"] = kill_at
        return env

    def popen(self, args: list[str], *, kill_at: str | None = None) -> ForkedProcess:
        """`python ARGS...` with this pipeline's environment, stdout and stderr in one pipe."""
        process = self.fork_server.popen([sys.executable, *args], env=self.env(kill_at), cwd=ROOT)
        self.started.append(process)
        return process

    def start(self, *args: str, kill_at: str | None = None) -> ForkedProcess:
        return self.popen([str(KILLPOINT), *args], kill_at=kill_at)

    def run(self, *args: str, kill_at: str | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
        process = self.start(*args, kill_at=kill_at)
        output, _ = process.communicate(timeout=timeout)
        return subprocess.CompletedProcess(process.args, process.returncode, output)

    def retrain(self, sources: list[str], *extra: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
        return self.run("retrain", *sources, "--runs-dir", str(self.folder / "runs"), "--system-prompt",
                        "Du bist der Alpenrad-Support.", *extra, kill_at=kill_at)

    # --- the invariants -------------------------------------------------------------------
    def jobs(self) -> list:
        return list(self.service.client().fine_tuning.jobs.list(limit=100))

    def files(self) -> list:
        return [f for f in self.service.client().files.list(purpose="fine-tune")]

    def ledger(self, table: str) -> list[dict]:
        import sqlalchemy as sa

        from ftflow.store.database import engine_for

        engine = engine_for(self.registry_url)
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.text(f"SELECT * FROM {table}")).mappings()]

    def assert_exactly_once(self) -> None:
        """1 file per content, 1 job per key, every job used by a run record, nothing left `creating`."""
        from ftflow.providers.base import KEY_FIELD

        names = Counter(f.filename for f in self.files())
        assert all(n == 1 for n in names.values()), names
        keys = Counter(job.metadata[KEY_FIELD] for job in self.jobs())
        assert all(n == 1 for n in keys.values()), keys
        recorded = {json.loads(r["record"]).get("job_id") for r in self.ledger("runs")}
        orphans = [job.id for job in self.jobs() if job.id not in recorded]
        assert orphans == [], f"jobs no run record uses: {orphans}"
        assert [r for r in self.ledger("fine_tuning_jobs") if r["status"] == "creating"] == []

    def running_flow_runs(self) -> list:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
        from prefect.client.schemas.objects import StateType

        with get_client(sync_client=True) as client:
            return client.read_flow_runs(flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))))


@pytest.fixture
def pipeline(service, prefect_api, fork_server, tmp_path):
    (tmp_path / "runs").mkdir()
    pipeline = Pipeline(service=service, prefect_api=prefect_api, fork_server=fork_server, folder=tmp_path)
    yield pipeline
    for process in pipeline.started:  # a failed test leaves no run behind
        if process.poll() is None:
            process.kill()


def dataset(folder: Path, name: str, n: int = 30) -> str:
    """A small raw dataset of its own (distinct content per name), as a JSONL source."""
    from tests.conftest import chat, write_jsonl

    records = [chat(f"[{name}] Wo ist Bestellung AR-{i}?", f'{{"antwort": "Bestellung AR-{i} ist unterwegs", '
                                                             f'"sprache": "de"}}') for i in range(n)]
    return str(write_jsonl(folder / f"{name}.jsonl", records))
