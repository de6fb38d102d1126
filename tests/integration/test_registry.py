"""The registry (the ledger and the lineage store) on SQLite and on the machine's PostgreSQL
(FTFLOW_TEST_POSTGRES_URL)."""

from __future__ import annotations

import time

import sqlalchemy as sa

from ftflow.store import ledger as ledger_tables
from ftflow.store import lineage as lineage_tables
from ftflow.store.ledger import Ledger
from ftflow.store.lineage import LineageStore
from tasks.lineage import unchanged_since_last_success


def run(run_id: str, status: str = "succeeded", sha: str = "a" * 64, **extra) -> dict:
    return {"run_id": run_id, "started_at": time.time(), "status": status, "dataset_sha256": sha,
            "base_model": "gpt-4o-mini-2024-07-18", "fine_tuned_model": f"ft:x:{run_id}", "job_id": f"job-{run_id}",
            "evaluation": {"candidate": {"f1": 0.9}}, **extra}


def test_runs_lineage_and_the_unchanged_check(lineage):
    lineage.save_run(run("r1"))
    lineage.save_run(run("r2", status="failed", sha="b" * 64))
    assert [r["run_id"] for r in lineage.list_runs()] == ["r2", "r1"]
    assert lineage.list_runs()[1]["evaluation"] == {"candidate": {"f1": 0.9}}
    assert lineage.last_successful_run("gpt-4o-mini-2024-07-18")["run_id"] == "r1"
    report = {"model": "gpt-4o-mini-2024-07-18", "dataset_sha256": "a" * 64}
    assert unchanged_since_last_success(lineage, report)["run_id"] == "r1"
    assert unchanged_since_last_success(lineage, {**report, "dataset_sha256": "c" * 64}) is None
    lineage.save_run(run("r1", status="succeeded", promoted=True))  # saving again updates
    assert len(lineage.list_runs()) == 2


def test_promotions_and_current_model(lineage):
    assert lineage.current_promotion("gpt-4o-mini-2024-07-18") is None
    lineage.promote("gpt-4o-mini-2024-07-18", "ft:one", "r1")
    lineage.promote("gpt-4o-mini-2024-07-18", "ft:two", "r2")
    lineage.promote("gpt-4.1-nano-2025-04-14", "ft:nano", "r3")
    assert lineage.current_promotion("gpt-4o-mini-2024-07-18")["model"] == "ft:two"
    assert lineage.current_promotion()["model"] == "ft:nano"


def test_ledger_of_files_and_jobs(ledger):
    ledger.record_file("local:x", "s" * 64, "fine-tune", "file-1")
    ledger.record_file("local:x", "s" * 64, "fine-tune", "file-2")
    assert ledger.find_file("local:x", "s" * 64, "fine-tune") == "file-2"
    assert ledger.find_file("openai:y", "s" * 64, "fine-tune") is None
    ledger.record_job("local:x", "k1", job_id=None, status="creating", flow_run_id="fr1")
    ledger.record_job("local:x", "k1", job_id="job-1", status="created", flow_run_id="fr1")
    assert ledger.job_entry("local:x", "k1")["job_id"] == "job-1"
    assert [j["job_id"] for j in ledger.jobs_of_flow_run("fr1")] == ["job-1"]


def test_the_newest_deployment_of_a_model_is_found_whichever_identity_made_it(ledger):
    assert ledger.newest_deployment("ft:m") is None
    ledger.record_deployment("azure-v1:http://a/", "ft:m", "old")
    time.sleep(0.01)
    ledger.record_deployment("azure-dated:http://a/", "ft:m", "new")
    ledger.record_deployment("azure-v1:http://a/", "ft:other", "other")
    assert ledger.newest_deployment("ft:m") == "new"
    assert ledger.deployment_of("azure-v1:http://a/", "ft:m") == "old"


def test_one_database_holds_both_stores_as_the_single_registry_did(ledger, lineage):
    """Same tables, same columns, one database: a registry written before the split keeps working."""
    assert ledger.engine is lineage.engine
    assert set(sa.inspect(ledger.engine).get_table_names()) >= {
        "uploaded_files", "multipart_uploads", "fine_tuning_jobs", "leases", "deployments",
        "flow_runs", "runs", "promotions"}


def test_a_registry_of_an_older_version_gets_the_new_columns(tmp_path):
    """Tables written before a column existed are widened on first use; the rows stay readable."""
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE runs (run_id VARCHAR(64) PRIMARY KEY, flow_run_id VARCHAR(64), "
                             "started_at FLOAT NOT NULL, status VARCHAR(40) NOT NULL, dataset_sha256 VARCHAR(64), "
                             "base_model VARCHAR(200), fine_tuned_model VARCHAR(300), job_id VARCHAR(200), "
                             "promoted BOOLEAN NOT NULL, record TEXT NOT NULL)"))  # no `backend` yet
        conn.execute(sa.text("CREATE TABLE deployments (provider VARCHAR(500), model VARCHAR(300), "
                             "deployment VARCHAR(200) NOT NULL, created_at FLOAT NOT NULL, "
                             "PRIMARY KEY (provider, model))"))
        conn.execute(sa.text("INSERT INTO runs VALUES ('r0', NULL, 1.0, 'succeeded', NULL, 'm', 'ft:m', NULL, 0, "
                             "'{\"run_id\": \"r0\"}')"))
    engine.dispose()
    lineage = LineageStore(url)
    assert lineage.list_runs() == [{"run_id": "r0"}] and lineage.backend_of("ft:m") is None
    columns = {c["name"] for c in sa.inspect(lineage.engine).get_columns("runs")}
    assert columns == {c.name for c in lineage_tables.runs.columns}
    ledger = Ledger(url)
    ledger.record_deployment("azure-v1:http://a/", "ft:m", "d")
    assert ledger.deployment_of("azure-v1:http://a/", "ft:m") == "d"
    assert {t.name for t in ledger_tables.metadata.sorted_tables} <= set(sa.inspect(ledger.engine).get_table_names())


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
