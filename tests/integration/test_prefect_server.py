"""The Prefect servers ftflow starts (ftflow/prefect_server.py): a command's temporary one, and the
background one later commands reuse until `ftflow server stop`."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading

import pytest

from ftflow import prefect_api, prefect_server
from ftflow.errors import FtflowError
from tests.conftest import chat, write_jsonl
from tests.integration.test_prefect_api import FTFLOW, _server_processes


@pytest.mark.flow
def test_a_taken_port_is_replaced_by_a_free_one(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-the-server")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = iter([taken.getsockname()[1], prefect_server.free_port()])
        monkeypatch.setattr(prefect_server, "free_port", lambda: next(ports))
        server = prefect_server.TemporaryServer()
        try:
            server.wait_ready(timeout=300)
            assert server.port != taken.getsockname()[1]
            assert b"sk-not-for-the-server" not in open(f"/proc/{server.process.pid}/environ", "rb").read()
        finally:
            server.stop()
    assert server.process is None


@pytest.mark.flow
@pytest.mark.parametrize("kind", ["temporary", "background"])
def test_a_server_that_cannot_start_is_reported_at_once_naming_its_log(kind, tmp_path, monkeypatch):
    """uvicorn ends with one exit code both when its port was taken and when the app cannot start:
    only the first is worth another try."""
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    monkeypatch.setenv("PREFECT_SERVER_DATABASE_CONNECTION_URL", "postgresql+asyncpg://nobody@127.0.0.1:1/none")
    starts = []
    command = prefect_server.server_command
    monkeypatch.setattr(prefect_server, "server_command", lambda port: starts.append(port) or command(port))
    server = prefect_server.TemporaryServer() if kind == "temporary" else prefect_server.background_server(start=True)
    try:
        with pytest.raises(FtflowError, match="while starting; its log: ") as raised:
            server.wait_ready(timeout=300)
    finally:
        server.stop()
    log = tmp_path / ("ftflow-temporary-server.log" if kind == "temporary" else "ftflow-server.log")
    assert str(raised.value).endswith(str(log))
    assert "Application startup failed" in log.read_text()  # what the server said, kept for the person who asks
    assert len(starts) == 1  # not started again and again until the start-up timeout
    assert not (tmp_path / "ftflow-server.json").exists()


@pytest.mark.flow
def test_a_background_server_is_announced_reused_by_later_commands_and_stopped(tmp_path):
    home = tmp_path / "prefect"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API") and k != "PREFECT_UI_URL"}
    env |= {"PREFECT_HOME": str(home), "FTFLOW_WORK_DIR": str(tmp_path / "work"), "FTFLOW_PREFECT_SERVER": "background",
            "OPENAI_API_KEY": "sk-not-for-the-server"}
    source = write_jsonl(tmp_path / "chats.jsonl", [chat(f"Frage {i}: wo ist mein Paket?", f"Antwort {i}")
                                                    for i in range(50)])

    def ftflow(*args: str, **variables: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(FTFLOW), *args], env={**env, **variables}, cwd=tmp_path, capture_output=True,
                              text=True, timeout=600)

    try:
        first = ftflow("prepare", str(source), "--out", str(tmp_path / "first"))
        assert first.returncode == 0, first.stderr
        (pid,) = _server_processes(home)
        record = json.loads((home / "ftflow-server.json").read_text())
        url = f"http://127.0.0.1:{record['port']}/api"
        assert record["pid"] == pid
        assert first.stderr == f"started a Prefect server at {url} for later runs; `ftflow server stop` ends it\n"
        assert b"sk-not-for-the-server" not in open(f"/proc/{pid}/environ", "rb").read()  # it outlives the command

        # A script (no terminal) with the default setting: reuses it, starts nothing, says nothing.
        second = ftflow("prepare", str(source), "--out", str(tmp_path / "second"), FTFLOW_PREFECT_SERVER="auto")
        assert (second.returncode, second.stderr) == (0, "")
        assert "temporary Prefect server" not in second.stdout
        assert _server_processes(home) == [pid]

        status = ftflow("server", "status")
        assert status.returncode == 0 and url in status.stdout and f"pid {pid}" in status.stdout
        stop = ftflow("server", "stop")
        assert stop.returncode == 0 and stop.stdout.startswith(f"stopped the Prefect server at {url} (pid {pid})")
        assert _server_processes(home) == []
        assert ftflow("server", "status").returncode == 1
        with sqlite3.connect(home / "prefect.db") as db:  # it stored both runs before it stopped
            assert [state for state, in db.execute("SELECT state_type FROM flow_run")] == ["COMPLETED"] * 2
    finally:  # what a failed check leaves behind goes, by pid
        for pid in _server_processes(home):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.flow
def test_commands_starting_at_once_start_one_server_and_one_of_another_prefect_version_is_replaced(
        tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    found: list[prefect_server.BackgroundServer] = []
    starting = [threading.Thread(target=lambda: found.append(prefect_server.background_server(start=True)))
                for _ in range(2)]
    try:
        for thread in starting:
            thread.start()
        for thread in starting:
            thread.join()
        assert sorted(server.booting for server in found) == [False, True]
        (pid,) = {server.record.pid for server in found}
        found[0].wait_ready(timeout=300)
        monkeypatch.setattr(prefect_server, "_prefect_version", lambda: "0.0.1")  # Prefect was upgraded since
        assert prefect_server.background_server(start=False) is None
        assert not prefect_server._is_server(pid)
    finally:
        for pid in _server_processes(tmp_path / "prefect"):
            os.kill(pid, signal.SIGKILL)


def test_a_record_whose_process_is_gone_or_another_is_forgotten_and_nothing_is_stopped(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for pid in (int(ended.stdout), os.getpid()):  # gone; a living process that is no server (a reused pid)
        (tmp_path / "ftflow-server.json").write_text(json.dumps(
            {"pid": pid, "port": 8123, "prefect_version": "3.9.1", "started_at": 0.0}))
        assert prefect_server.running_background_server() is None
        assert not (tmp_path / "ftflow-server.json").exists()
    assert prefect_server.stop_background_server() is None


@pytest.mark.parametrize(("mode", "terminal", "asked"), [
    ("auto", True, [True]),  # in a terminal, where the line that says so is seen: one is started
    ("auto", False, [False]),  # a script, CI: a running one is reused, none started
    ("background", False, [True]),
    ("temporary", True, []),
])
def test_the_setting_and_the_terminal_decide_whether_a_server_is_left_running(mode, terminal, asked, monkeypatch):
    monkeypatch.setenv("FTFLOW_PREFECT_SERVER", mode)
    starts: list[bool] = []
    monkeypatch.setattr(prefect_api, "background_server", lambda start: starts.append(start))  # none runs
    monkeypatch.setattr(prefect_api, "TemporaryServer", lambda: "temporary")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)
    assert prefect_api._server() == "temporary"
    assert starts == asked
