"""Chaos: SIGTERM, SIGINT and SIGKILL at start-up, mid-shard and in the reduce of `ftflow prepare`.

Each run starts its own temporary Prefect server and prepares shards in worker processes
(FTFLOW_SHARD_MB=1). After each signal: the exit code, no process of the run left (server,
shard workers, the suites' process), never train without validation in --out; after the three
signals a re-run succeeds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, chat, write_jsonl
from tests.integration.chaos.conftest import KILLPOINT

pytestmark = [pytest.mark.chaos, pytest.mark.flow, pytest.mark.xdist_group("chaos")]  # see test_chaos.py
EXIT = {"TERM": 143, "INT": 130, "KILL": -9}  # 128 + the signal's number, as a shell reports it
MOMENTS = ("start-up", "mid-shard", "reduce")


def descendants(pid: int) -> set[tuple[int, str]]:
    """(pid, start time) of every living process below pid, from /proc."""
    children: dict[int, list[int]] = {}
    started: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
            started[int(entry.name)] = fields[19]
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add((child, started[child]))
            todo.append(child)
    return found


def alive(process: tuple[int, str]) -> str | None:
    """The command line of the process if it still runs (not a zombie), else None."""
    pid, start = process
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    return command if fields[19] == start and fields[0] != "Z" else None


def commands(seen: set[tuple[int, str]]) -> list[str]:
    return [command for process in seen if (command := alive(process))]


def signalled_run(name: str, moment: str, source: str, folder: Path, env: dict) -> tuple[int, set, str]:
    """Run prepare, send the signal at the moment; return the exit code, every process seen below it, its output."""
    extra = {"FTFLOW_CHAOS_KILL_AT": "reduce", "FTFLOW_CHAOS_SIGNAL": name} if moment == "reduce" else {}
    log = folder / f"{moment}.log"  # not a pipe: a process left behind would hold it open
    with open(log, "wb") as stdout:
        process = subprocess.Popen([sys.executable, str(KILLPOINT), "prepare", source, "--out", str(folder / "out")],
                                   env={**env, **extra}, cwd=ROOT, stdout=stdout, stderr=subprocess.STDOUT)
    seen: set[tuple[int, str]] = set()
    deadline = time.monotonic() + 600
    try:
        while process.poll() is None:
            assert time.monotonic() < deadline, "the run neither ended nor reached the moment"
            seen |= descendants(process.pid)
            server_up = any("uvicorn" in (alive(p) or "") for p in seen)
            in_shard = any(p.name.endswith(".partial") for p in (folder / "work" / "shards").glob(".*"))
            if (moment == "start-up" and server_up) or (moment == "mid-shard" and in_shard):
                seen |= descendants(process.pid)
                process.send_signal(signal.Signals[f"SIG{name}"])
                break
            time.sleep(0.05)
        process.wait(timeout=120)
    finally:
        process.kill()
    return process.returncode, seen, log.read_text(errors="replace")


@pytest.mark.parametrize("name", EXIT)
def test_a_signal_at_start_up_mid_shard_and_in_the_reduce_leaves_nothing_behind(name, tmp_path):
    records = [chat(f"Frage {i} " + "x" * 300, f"Antwort {i}") for i in range(10_000)]
    source = str(write_jsonl(tmp_path / "big.jsonl", records))  # 4 MB: four shards of 1 MiB
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}  # its own server
    env.update({"PREFECT_HOME": str(tmp_path / "prefect"), "FTFLOW_SHARD_MB": "1", "FTFLOW_WORKERS": "2",
                "FTFLOW_WORK_DIR": str(tmp_path / "work"), "FTFLOW_PREFECT_SERVER": "temporary"})
    out = tmp_path / "out"
    started: set[tuple[int, str]] = set()
    try:
        for moment in MOMENTS:
            code, seen, output = signalled_run(name, moment, source, tmp_path, env)
            started |= seen
            assert seen, f"{moment}: the run started no process"
            deadline = time.monotonic() + 15  # shard workers notice a SIGKILLed parent within a second
            while commands(seen) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert commands(seen) == [], f"{moment}: left running"
            assert code == EXIT[name], f"{moment}: {output[-3000:]}"
            assert (out / "train.jsonl").exists() == (out / "validation.jsonl").exists(), f"{moment}: half published"
    finally:  # what a failed check leaves behind goes, by pid
        for pid, _ in [p for p in started if alive(p)]:
            os.kill(pid, signal.SIGKILL)
    rerun = subprocess.run([sys.executable, "-m", "ftflow.cli", "prepare", source, "--out", str(out)],
                           env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    written = report["examples_written"]
    assert report["records_read"] == 10_000 == written["train"] + written["validation"] + report["duplicates_removed"]
    assert len((out / "train.jsonl").read_text().splitlines()) == written["train"]
