"""The registry on SQLite and on the machine's PostgreSQL (FTFLOW_TEST_POSTGRES_URL)."""

from __future__ import annotations

import time

from tasks.lineage import unchanged_since_last_success


def run(run_id: str, status: str = "succeeded", sha: str = "a" * 64, **extra) -> dict:
    return {"run_id": run_id, "started_at": time.time(), "status": status, "dataset_sha256": sha,
            "base_model": "gpt-4o-mini-2024-07-18", "fine_tuned_model": f"ft:x:{run_id}", "job_id": f"job-{run_id}",
            "evaluation": {"candidate": {"f1": 0.9}}, **extra}


def test_runs_lineage_and_the_unchanged_check(registry):
    registry.save_run(run("r1"))
    registry.save_run(run("r2", status="failed", sha="b" * 64))
    assert [r["run_id"] for r in registry.list_runs()] == ["r2", "r1"]
    assert registry.list_runs()[1]["evaluation"] == {"candidate": {"f1": 0.9}}
    assert registry.last_successful_run("gpt-4o-mini-2024-07-18")["run_id"] == "r1"
    report = {"model": "gpt-4o-mini-2024-07-18", "dataset_sha256": "a" * 64}
    assert unchanged_since_last_success(registry, report)["run_id"] == "r1"
    assert unchanged_since_last_success(registry, {**report, "dataset_sha256": "c" * 64}) is None
    registry.save_run(run("r1", status="succeeded", promoted=True))  # saving again updates
    assert len(registry.list_runs()) == 2


def test_promotions_and_current_model(registry):
    assert registry.current_promotion("gpt-4o-mini-2024-07-18") is None
    registry.promote("gpt-4o-mini-2024-07-18", "ft:one", "r1")
    registry.promote("gpt-4o-mini-2024-07-18", "ft:two", "r2")
    registry.promote("gpt-4.1-nano-2025-04-14", "ft:nano", "r3")
    assert registry.current_promotion("gpt-4o-mini-2024-07-18")["model"] == "ft:two"
    assert registry.current_promotion()["model"] == "ft:nano"


def test_ledger_of_files_and_jobs(registry):
    registry.record_file("local:x", "s" * 64, "fine-tune", "file-1")
    registry.record_file("local:x", "s" * 64, "fine-tune", "file-2")
    assert registry.find_file("local:x", "s" * 64, "fine-tune") == "file-2"
    assert registry.find_file("openai:y", "s" * 64, "fine-tune") is None
    registry.record_job("local:x", "k1", job_id=None, status="creating", flow_run_id="fr1")
    registry.record_job("local:x", "k1", job_id="job-1", status="created", flow_run_id="fr1")
    assert registry.job_entry("local:x", "k1")["job_id"] == "job-1"
    assert [j["job_id"] for j in registry.jobs_of_flow_run("fr1")] == ["job-1"]


def test_a_re_attached_job_costs_this_run_nothing():
    from tasks.lineage import run_cost_usd

    assert run_cost_usd({"job_created": False, "estimated_cost_usd": 0.33}, 0.31) == 0.0
    assert run_cost_usd({"job_created": True, "estimated_cost_usd": 0.33}, 0.31) == 0.31
    assert run_cost_usd({"job_created": True, "estimated_cost_usd": 0.33}, None) == 0.33  # not evaluated


def test_a_failed_runs_reason_is_one_line_that_names_the_error():
    from ftflow.errors import FtflowError
    from tasks.lineage import failure_reason

    assert failure_reason(FtflowError("budget gate failed:\n  $0.88 > $0.01")) == "budget gate failed: $0.88 > $0.01"
    assert failure_reason(ValueError("bad value:")) == "ValueError: bad value:"
    assert failure_reason(KeyError()) == "KeyError"
