"""Chaos: concurrent runs, SIGKILLs at named points (with and without --force), service faults.

Everything runs as real processes: the local service (`python -m localai`) and each `ftflow
retrain` (tests/chaos/killpoint.py, which SIGKILLs itself at the named point). After every
re-run: 1 file per content, 1 job per key, 0 orphan jobs, 0 `creating` ledger rows and 0
flow runs left `Running`.
"""

from __future__ import annotations

import pytest

from tests.chaos.conftest import dataset
from tests.chaos.killpoint import POINTS
from tests.conftest import ROOT

pytestmark = [pytest.mark.chaos, pytest.mark.flow, pytest.mark.service]
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
    sources = [dataset(tmp_path, "concurrent")]
    runs_dir = str(tmp_path / "runs")
    script = (
        "import sys, threading\n"
        "from typer.testing import CliRunner\n"
        "from ftflow.cli import app\n"
        "results = []\n"
        "def run():\n"
        f"    results.append(CliRunner().invoke(app, ['retrain', {sources[0]!r}, '--runs-dir', {runs_dir!r}]))\n"
        "threads = [threading.Thread(target=run) for _ in range(2)]\n"
        "[t.start() for t in threads]; [t.join() for t in threads]\n"
        "[print(r.output) for r in results]\n"
        "sys.exit(max(r.exit_code for r in results))\n"
    )
    import subprocess
    import sys

    threads = subprocess.Popen([sys.executable, "-c", script], env=pipeline.env(), cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    processes = [pipeline.start("retrain", sources[0], "--runs-dir", runs_dir) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in [threads, *processes]]
    assert [p.returncode for p in [threads, *processes]] == [0, 0, 0], "\n".join(o[-2000:] for o in outputs)
    assert len(pipeline.jobs()) == 1
    assert len(pipeline.files()) == 2  # train and validation, each once
    assert len({r["job_id"] for r in pipeline.ledger("runs")}) == 1 and len(pipeline.ledger("runs")) == 4
    pipeline.assert_exactly_once()


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_then_rerun_without_force(pipeline, tmp_path, point):
    kill_then_rerun(pipeline, [dataset(tmp_path, point)], point)


FORCE_POINTS = ("create-before", "create-after", "polling", "evaluation", "record-before")


def test_sigkill_with_force_then_rerun_attaches_to_the_job_in_flight(pipeline, tmp_path):
    sources = [dataset(tmp_path, "force")]
    assert pipeline.retrain(sources).returncode == 0
    for point in FORCE_POINTS:
        kill_then_rerun(pipeline, sources, point, "--force")
    # The first run's job, then one per killed --force run: its re-run attached to it (or, killed before the
    # create, trained it), never a second one.
    assert len(pipeline.jobs()) == 1 + len(FORCE_POINTS)


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
