"""Chaos: concurrent runs, SIGKILLs at named points (with and without --force), service faults.

Everything runs as real processes: the local service (`python -m localai`) and each `ftflow
retrain` (tests/integration/chaos/killpoint.py, which SIGKILLs itself at the named point), forked
with its imports done from the worker's fork server (tests/forkserver.py). After every
re-run: 1 file per content, 1 job per key, 0 orphan jobs, 0 `creating` ledger rows and 0
flow runs left `Running`.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import ROOT
from tests.integration.chaos.conftest import dataset
from tests.integration.chaos.killpoint import POINTS

# One chaos test at a time in the whole suite (one xdist group for both chaos modules): more runs
# at once starve the shared cores (and on SQLite, where no PostgreSQL answers, Prefect's test
# server answers 503).
pytestmark = [pytest.mark.chaos, pytest.mark.flow, pytest.mark.service, pytest.mark.xdist_group("chaos")]
SAMPLES = str(ROOT / "data/raw/*")
KILLED = -9


def kill_then_rerun(pipeline, sources: list[str], point: str, *extra: str) -> None:
    killed = pipeline.retrain(sources, *extra, kill_at=point)
    assert killed.returncode == KILLED, killed.stdout[-3000:]
    rerun = pipeline.retrain(sources, *extra)
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    pipeline.assert_exactly_once()
    assert pipeline.running_flow_runs() == []


def test_concurrent_runs_two_threads_two_processes_make_one_file_per_content_and_one_job(pipeline, tmp_path):
    """Four runs of the same data at once: one trains, the others attach to its job.

    A run that starts after another has already recorded its result skips as unchanged: that is
    the answer a scheduled re-run gets too, so it counts as a correct outcome here.
    """
    sources = [dataset(tmp_path, "concurrent")]
    runs_dir = str(tmp_path / "runs")
    script = (  # two flow runs in threads of one process (the CLI's runner is not thread-safe: call the flow)
        "import sys, threading, traceback\n"
        "from flows.retrain import retrain\n"
        "results = []\n"
        "def run():\n"
        "    try:\n"
        f"        results.append(retrain({sources!r}, overrides={{'runs_dir': {runs_dir!r}}})['status'])\n"
        "    except BaseException:\n"
        "        results.append('raised:' + traceback.format_exc())\n"
        "threads = [threading.Thread(target=run) for _ in range(2)]\n"
        "[t.start() for t in threads]; [t.join() for t in threads]\n"
        "print('THREAD RESULTS', results)\n"
        "sys.exit(0 if all(r in ('succeeded', 'skipped') for r in results) else 1)\n"
    )
    threads = pipeline.popen(["-c", script])
    processes = [pipeline.start("retrain", sources[0], "--runs-dir", runs_dir) for _ in range(2)]
    outputs = [p.communicate(timeout=900)[0] for p in [threads, *processes]]
    tails = "\n".join(o[o.find("Traceback") if "Traceback" in o else -3000:][-6000:] for o in outputs)
    assert [p.returncode for p in [threads, *processes]] == [0, 0, 0], tails
    assert len(pipeline.jobs()) == 1
    assert len(pipeline.files()) == 2  # train and validation, each once
    records = [json.loads(r["record"]) for r in pipeline.ledger("runs")]
    assert len(records) == 4
    trained = [r for r in records if r["status"] == "succeeded"]
    assert trained and {r["job_id"] for r in trained} == {pipeline.jobs()[0].id}
    assert all(r["status"] == "skipped" and "unchanged" in r["reason"] for r in records if r not in trained)
    pipeline.assert_exactly_once()


def test_sigkill_at_each_point_then_rerun_without_force(pipeline, tmp_path):
    """Ten runs on ten datasets, each SIGKILLed at its own point, then a re-run of each; two at a time.

    Two at a time: ten flow-running processes at once overload the two cores (and, on SQLite, Prefect's
    test server: 503s).
    """
    datasets = {point: dataset(tmp_path, point) for point in POINTS}

    def two_at_a_time(kill: bool) -> None:
        for pair in (POINTS[i:i + 2] for i in range(0, len(POINTS), 2)):
            runs = {point: pipeline.start("retrain", datasets[point], "--runs-dir", str(tmp_path / "runs"),
                                          kill_at=point if kill else None) for point in pair}
            for point, process in runs.items():
                output = process.communicate(timeout=900)[0]
                assert process.returncode == (KILLED if kill else 0), f"{point}: {output[-3000:]}"

    two_at_a_time(kill=True)
    two_at_a_time(kill=False)
    pipeline.assert_exactly_once()
    assert pipeline.running_flow_runs() == []
    assert len(pipeline.ledger("runs")) == len(POINTS) + 1  # record-after's run was recorded before the kill


def test_sigkill_with_force_then_rerun_attaches_to_the_job_in_flight(pipeline, tmp_path):
    """Killed --force runs in a row attach to the one job in flight; only a kill before the create trains anew."""
    sources = [dataset(tmp_path, "force")]
    assert pipeline.retrain(sources).returncode == 0
    for point in ("create-after", "polling", "evaluation", "record-before"):
        killed = pipeline.retrain(sources, "--force", kill_at=point)
        assert killed.returncode == KILLED, f"{point}: {killed.stdout[-3000:]}"
    assert pipeline.retrain(sources, "--force").returncode == 0
    pipeline.assert_exactly_once()
    assert pipeline.running_flow_runs() == [] and len(pipeline.jobs()) == 2
    kill_then_rerun(pipeline, sources, "create-before", "--force")
    assert len(pipeline.jobs()) == 3


def test_sigkill_under_service_faults(pipeline, tmp_path):
    """429/5xx/lost responses, and jobs that register 3 s after a lost answer (beyond any 2 s grace)."""
    pipeline.settings_env = {"FTFLOW_REQUEST_TIMEOUT_SECONDS": "1.5"}
    creates = {"rate_limit": 0.2, "server_error": 0.2, "lost_response": 0.3, "retry_after": 0.01}
    pipeline.service.set_faults({"files.create": creates, "uploads.complete": creates,
                                 "fine_tuning.jobs.create": {"slow": 1.0, "slow_seconds": 3.0, "max_faults": 2},
                                 "*": {"rate_limit": 0.05, "retry_after": 0.01}}, seed=3)
    sources = [dataset(tmp_path, "faults")]
    kill_then_rerun(pipeline, sources, "create-after")
    kill_then_rerun(pipeline, sources, "polling", "--force")
    assert any("slow" in k for k in pipeline.service.injected()), pipeline.service.injected()
