from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"

# Under pytest-xdist each worker gets a Prefect home of its own, so the temporary Prefect servers
# of two workers never share one SQLite database (set before ftflow applies its defaults below).
if worker := os.environ.get("PYTEST_XDIST_WORKER"):
    home = Path(os.environ.get("PREFECT_HOME", Path.cwd() / ".ftflow" / "prefect")) / worker
    home.mkdir(parents=True, exist_ok=True)
    os.environ["PREFECT_HOME"] = str(home)
# The temporary Prefect servers of the commands the tests run start late on a loaded machine
# (parallel workers, a busy CI host): allow what prefect_server allows, unless the user chose.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")

import ftflow  # noqa: E402, F401 - applies ftflow's Prefect defaults (ftflow/environment.py) before a test imports Prefect


def write_jsonl(path: Path, records: list) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(record if isinstance(record, str) else json.dumps(record, ensure_ascii=False))
            f.write("\n")
    return path


def chat(user: str, assistant: str, system: str | None = None) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    return {"messages": [*messages, {"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


def postgres_url() -> str:
    return os.environ.get("FTFLOW_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def postgres_engine_or_skip():
    """An engine on the test PostgreSQL; the test skips, saying why, when none answers."""
    import sqlalchemy as sa

    engine = sa.create_engine(postgres_url())
    try:
        engine.connect().close()
    except sa.exc.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {postgres_url()}: {exc.orig}")
    return engine


FAST = {"seconds_per_1k_tokens": 0.002, "tick_seconds": 0.05}


def training_bytes(n: int = 12, offset: int = 0) -> bytes:
    lines = [
        json.dumps(chat(f"Frage {i}: Wo ist Bestellung AR-{i}?", f'{{"antwort": "Bestellung AR-{i} ist unterwegs"}}'))
        for i in range(offset, offset + n)
    ]
    return ("\n".join(lines) + "\n").encode()


def preference(user: str, preferred: str, non_preferred: str, system: str | None = None) -> dict:
    """One line of OpenAI's preference (DPO) format."""
    messages = [{"role": "system", "content": system}] if system else []
    return {
        "input": {"messages": [*messages, {"role": "user", "content": user}]},
        "preferred_output": [{"role": "assistant", "content": preferred}],
        "non_preferred_output": [{"role": "assistant", "content": non_preferred}],
    }


def preference_bytes(n: int = 12) -> bytes:
    lines = [
        json.dumps(preference(f"Frage {i}: Wo ist Bestellung AR-{i}?", f'{{"antwort": "AR-{i} ist unterwegs"}}',
                              f"Your order AR-{i} has shipped."))
        for i in range(n)
    ]
    return ("\n".join(lines) + "\n").encode()


def wait_for_job(client, job_id: str, *, statuses=("succeeded", "failed", "cancelled"), timeout: float = 30.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {job.status} after {timeout}s")
