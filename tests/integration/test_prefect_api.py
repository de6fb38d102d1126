"""The Prefect API a command talks to: a server of its own when none is configured (ftflow/prefect_api.py)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ftflow import prefect_api
from tests.conftest import ROOT, chat, write_jsonl

FTFLOW = Path(sys.executable).parent / "ftflow"


def _server_processes(prefect_home: Path) -> list[int]:
    """Prefect server processes started with this PREFECT_HOME that are still alive."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if b"prefect.server.api.server:create_app" in cmdline and f"PREFECT_HOME={prefect_home}".encode() in environ:
            found.append(int(pid))
    return found


@pytest.mark.flow
def test_a_command_without_a_server_runs_on_a_temporary_one_that_keeps_its_logs(tmp_path):
    home = tmp_path / "prefect"
    # Two shards on two worker processes: their logs and events reach the server through
    # threads of the command, which must see the same server as the flow.
    source = write_jsonl(tmp_path / "chats.jsonl", [chat(f"Frage {i}: " + "wo ist mein Paket? " * 30, f"Antwort {i}")
                                                    for i in range(3000)])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API") and k != "PREFECT_UI_URL"}
    env |= {"PREFECT_HOME": str(home), "FTFLOW_WORK_DIR": str(tmp_path / "work"), "FTFLOW_SHARD_MB": "1",
            "FTFLOW_PREFECT_SERVER": "temporary"}
    done = subprocess.run([str(FTFLOW), "prepare", str(source), "--out", str(tmp_path / "out"), "--workers", "2"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)

    assert done.returncode == 0, done.stderr
    assert "PREFECT_API_URL is not set: starting a temporary Prefect server" in done.stdout
    assert "Starting temporary server" not in done.stdout + done.stderr  # Prefect did not start one of its own
    assert done.stderr == ""  # the workers' logs go to the run, not to the terminal
    assert "Error logging to API" not in done.stdout + done.stderr  # logs were sent before the server stopped
    assert "View at" not in done.stdout  # the temporary server serves no UI
    assert _server_processes(home) == []
    with sqlite3.connect(home / "prefect.db") as db:
        (flow_run_id, state), = db.execute("SELECT id, state_type FROM flow_run").fetchall()
        logs = [m for m, in db.execute("SELECT message FROM log WHERE flow_run_id = ?", (flow_run_id,))]
        unfinished = db.execute("SELECT name, state_type FROM task_run WHERE state_type IS NOT 'COMPLETED'").fetchall()
    assert state == "COMPLETED"
    assert unfinished == []  # the server stored the last tasks' states before it was stopped
    assert sum(m.startswith("prepared: ") for m in logs) == 2  # each worker's shard, through the API


SLOW_RECORDER = Path(__file__).with_name("slow_recorder_server.py")
FOUR_TASKS_AT_ONCE = f"""
import sys, threading
from ftflow import prefect_api, prefect_server

command = prefect_server.server_command
prefect_server.server_command = lambda port: [sys.executable, {str(SLOW_RECORDER)!r}, *command(port)[3:]]  # not -m uvicorn

from prefect import flow, task

all_started = threading.Barrier(4)  # the four complete after all started: their last events come last

@task
def step(i):
    all_started.wait(timeout=30)
    return i

@flow
def four_at_once():
    return step.map(range(4)).result()

with prefect_api.prefect_api(announce=lambda: None) as api:
    api.connect()
    four_at_once()
"""


@pytest.mark.flow
def test_a_temporary_server_is_stopped_only_once_it_stored_every_task_run(tmp_path):
    home = tmp_path / "prefect"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API") and k != "PREFECT_UI_URL"}
    env |= {"PREFECT_HOME": str(home), "FTFLOW_PREFECT_SERVER": "temporary", "PYTHONPATH": str(ROOT),
            "PREFECT_LOGGING_LEVEL": "WARNING"}  # no run logs: stderr shows only what went wrong
    done = subprocess.run([sys.executable, "-c", FOUR_TASKS_AT_ONCE], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)

    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    with sqlite3.connect(home / "prefect.db") as db:
        task_runs = db.execute("SELECT state_type, count(*) FROM task_run GROUP BY 1").fetchall()
    # 12 events at 0.2 s each: the recorder was seconds behind when the flow ended
    assert task_runs == [("COMPLETED", 4)]


def test_no_temporary_server_when_a_server_is_configured(monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:1/api")
    with prefect_api.prefect_api(announce=lambda: pytest.fail("announced a temporary server")) as api:
        assert api.server is None
        api.connect()
    monkeypatch.delenv("PREFECT_API_URL")
    # Set where only Prefect looks (a profile, prefect.toml): seen in the settings once loaded.
    with (
        temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:1/api"}),
        prefect_api.prefect_api(announce=lambda: pytest.fail("announced a temporary server")) as api,
    ):
        assert api.server is None


@pytest.mark.parametrize("started_here", [True, False])  # False: a background server found running
def test_a_server_started_before_the_settings_were_read_is_stopped_if_one_is_configured(started_here):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    class Server:
        booting = started_here
        stopped = False

        def stop(self):
            self.stopped = True

    server = Server()
    api = prefect_api.PrefectApi(server, announce=lambda: pytest.fail("announced a temporary server"))
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:1/api"}):
        api.connect()
    api.close()
    assert server.stopped == started_here and api.server is None


def test_importing_the_flows_sets_prefect_home_and_analytics_before_prefect_reads_them(tmp_path):
    """Run outside `make` (no PREFECT_* in the environment), ftflow still keeps Prefect under .ftflow/."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    code = ("import flows; from prefect.settings import get_current_settings as g; s = g(); "
            "print(s.home); print(s.server.analytics_enabled)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(tmp_path / ".ftflow" / "prefect"), "False"]
    assert "Warning" not in out.stderr and "Traceback" not in out.stderr
    mine = subprocess.run([sys.executable, "-c", code], cwd=tmp_path,
                          env={**env, "PYTHONPATH": str(ROOT), "PREFECT_HOME": str(tmp_path / "mine"),
                               "PREFECT_SERVER_ANALYTICS_ENABLED": "true"},
                          capture_output=True, text=True, check=True)
    assert mine.stdout.split() == [str(tmp_path / "mine"), "True"]
