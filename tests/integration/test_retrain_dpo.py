"""`retrain --method dpo` end to end on the preference sample against the local service."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ftflow.cli import app
from ftflow.store.lineage import LineageStore
from tests.conftest import ROOT

pytestmark = [pytest.mark.flow, pytest.mark.service]
MODEL = "gpt-4.1-mini-2025-04-14"


def test_retrain_dpo_end_to_end(prefect_server, local_service, tmp_path, monkeypatch):
    monkeypatch.setenv("FTFLOW_SERVICE_URL", local_service.base_url)
    monkeypatch.setenv("FTFLOW_SERVICE_API_KEY", local_service.api_key)
    monkeypatch.setenv("FTFLOW_REGISTRY_URL", f"sqlite:///{tmp_path / 'registry.sqlite3'}")
    monkeypatch.setenv("FTFLOW_POLL_INITIAL_SECONDS", "0.05")
    monkeypatch.setenv("FTFLOW_POLL_MAX_SECONDS", "0.2")
    monkeypatch.setenv("FTFLOW_WORK_DIR", str(tmp_path / "work"))
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["retrain", "--method", "dpo", "--model", MODEL, "--runs-dir", str(runs),
                                      str(ROOT / "data/preference/*")])
    assert result.exit_code == 0, result.output
    assert "win rate" in result.output and "dpo" in result.output
    (run_dir,) = runs.iterdir()
    record = json.loads((run_dir / "run.json").read_text())
    report = json.loads((run_dir / "report.json").read_text())
    evaluation = json.loads((run_dir / "eval.json").read_text())
    assert record["method"] == report["method"] == evaluation["method"] == "dpo"
    # the invariant, in pairs
    assert report["records_read"] == (sum(report["examples_written"].values()) + sum(report["rejected"].values())
                                      + report["duplicates_removed"])
    assert report["rejected"]["identical_outputs"] >= 1 and report["duplicates_removed"] >= 1
    job = local_service.service.openai.store.list("job")[0]
    assert job["method"]["type"] == "dpo" and job["method"]["dpo"]["hyperparameters"]["beta"] == 0.1
    assert record["hyperparameters"]["beta"] == 0.1
    assert record["trained_tokens"] == report["billing_tokens"]
    candidate, baseline = evaluation["models"]["candidate"], evaluation["models"]["baseline"]
    assert candidate["win_rate"] > baseline["win_rate"]
    # The simulator's tuned model answers with a training pair's preferred answer: other customers'
    # facts, which the fact-recall criterion refuses even though it wins more pairs.
    assert not record["promoted"] and "fact_recall" in record["promotion"]["reasons"][0], record["promotion"]
    win = [c for c in record["promotion"]["criteria"] if "win_rate" in c["criterion"]]
    assert win and all(c["verdict"] == "pass" for c in win), record["promotion"]["criteria"]
    lineage = LineageStore(f"sqlite:///{tmp_path / 'registry.sqlite3'}")
    assert lineage.list_runs()[0]["method"] == "dpo"  # the registry holds the method with the run
    lineage.promote(record["base_model"], record["fine_tuned_model"], record["run_id"], backend=record["backend"])
    models = CliRunner().invoke(app, ["models"])
    assert models.exit_code == 0 and "dpo" in models.output, models.output

    # The same pairs and settings again: decided before preparing (the pairs' own digest), no second job.
    again = CliRunner().invoke(app, ["retrain", "--method", "dpo", "--model", MODEL, "--runs-dir", str(runs),
                                     str(ROOT / "data/preference/*")])
    assert again.exit_code == 0, again.output
    assert "not prepared again" in " ".join(again.output.split())
    assert len(local_service.service.openai.store.list("job")) == 1
