"""`ftflow retrain --backend vertex` end to end against the local service's Vertex AI and Cloud Storage:
Gemini's format uploaded, tuned, evaluated through generate_content, the gate decided, the run recorded;
a migration from a promoted local model scored on each model's own backend; one preference (DPO) run."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from flows.retrain import retrain
from ftflow.cli import app
from ftflow.formats.gemini import TOKEN_RULE
from ftflow.store.lineage import LineageStore
from tests.conftest import ROOT
from tests.integration.test_provider_vertex import vertex_env
from tests.integration.test_providers_e2e import PROMPT, SAMPLES, promote_by_hand, registry_row

pytestmark = [pytest.mark.flow, pytest.mark.service]
MODEL = "gemini-2.5-flash"


@pytest.fixture
def env(local_service, tmp_path, monkeypatch):
    vertex_env(local_service, monkeypatch, tmp_path)
    for name, value in {"FTFLOW_SERVICE_URL": local_service.base_url, "FTFLOW_SERVICE_API_KEY": local_service.api_key,
                        "FTFLOW_REGISTRY_URL": f"sqlite:///{tmp_path / 'registry.sqlite3'}",
                        "FTFLOW_POLL_INITIAL_SECONDS": "0.05", "FTFLOW_POLL_MAX_SECONDS": "0.2"}.items():
        monkeypatch.setenv(name, value)
    return local_service


def test_retrain_on_vertex_trains_evaluates_decides_and_records(prefect_server, env, tmp_path):
    record = retrain(SAMPLES, overrides={"runs_dir": str(tmp_path / "runs"), "system_prompt": PROMPT,
                                         "backend": "vertex", "model": MODEL})
    assert record["status"] == "succeeded" and record["backend"] == "vertex", record
    assert record["fine_tuned_model"].startswith(f"{MODEL}@projects/ftflow-test/locations/us-central1/endpoints/")
    assert "promoted" in record and record["promotion"]["reasons"]
    evaluation = json.loads((tmp_path / "runs" / record["run_id"] / "eval.json").read_text())
    assert len(evaluation["per_example"]["candidate"]) > 0
    assert registry_row(tmp_path, record["run_id"])["backend"] == "vertex"
    report = json.loads((tmp_path / "runs" / record["run_id"] / "report.json").read_text())
    assert report["encoding"] == TOKEN_RULE and report["billing_tokens"] > 0  # the budget: Gemini's estimate
    (job,) = env.service.vertex.store.list("vertex.job")
    assert record["trained_tokens"] == env.service.vertex.jobs.get(job["_core"])["trained_tokens"] > 0  # the real count
    blobs = list(env.service.vertex.store.list("gcs.object"))
    assert blobs and all(json.loads(env.service.vertex.store.blob_path(b["_blob"]).read_bytes().splitlines()[0])
                         .get("contents") for b in blobs)  # Gemini's format went up, nothing else


def test_migration_from_a_promoted_local_model_scores_the_incumbent_on_its_own_backend(prefect_server, env,
                                                                                      tmp_path):
    runs = str(tmp_path / "runs")
    first = retrain(SAMPLES, overrides={"runs_dir": runs, "system_prompt": PROMPT})
    assert first["backend"] == "local"
    promote_by_hand(tmp_path, first)
    second = retrain(SAMPLES, overrides={"runs_dir": runs, "system_prompt": PROMPT, "backend": "vertex",
                                         "model": MODEL})
    assert second["status"] == "succeeded" and second["backend"] == "vertex"
    models = second["evaluation"]
    assert models["current"]["model"] == first["fine_tuned_model"]
    assert models["candidate"]["model"] == second["fine_tuned_model"]
    evaluation = json.loads((tmp_path / "runs" / second["run_id"] / "eval.json").read_text())
    assert [e["reference"] for e in evaluation["per_example"]["current"]] == \
        [e["reference"] for e in evaluation["per_example"]["candidate"]]
    assert models["current"]["f1"] > 0.5  # the incumbent answered through local, where it lives
    backends = {r["run_id"]: r["backend"] for r in LineageStore(f"sqlite:///{tmp_path / 'registry.sqlite3'}").list_runs()}
    assert backends == {first["run_id"]: "local", second["run_id"]: "vertex"}


def test_a_dpo_run_goes_through_preference_tuning(prefect_server, env, tmp_path):
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["retrain", "--backend", "vertex", "--method", "dpo", "--model", MODEL,
                                      "--runs-dir", str(runs), str(ROOT / "data/preference/*")])
    assert result.exit_code == 0, result.output
    (run_dir,) = runs.iterdir()
    record = json.loads((run_dir / "run.json").read_text())
    assert record["method"] == "dpo" and record["backend"] == "vertex" and record["status"] == "succeeded"
    (job,) = env.service.vertex.store.list("vertex.job")
    spec = job["_request"]["preferenceOptimizationSpec"]
    assert spec["hyperParameters"]["beta"] == 0.1 and "supervisedTuningSpec" not in job["_request"]
    uploaded = env.service.vertex.store.list("gcs.object")
    first = json.loads(env.service.vertex.store.blob_path(uploaded[0]["_blob"]).read_bytes().splitlines()[0])
    assert sorted(c["score"] for c in first["completions"]) == [0, 1]
    assert json.loads((run_dir / "eval.json").read_text())["models"]["candidate"]["win_rate"] is not None


@pytest.mark.parametrize(("refusal", "line"), [
    ("model", "Vertex AI cannot tune this base model"),
    ("permission", "Vertex AI refused the request for lack of permission"),
    ("quota", "the provider's quota refused the fine-tuning job"),
])
def test_refusals_end_the_run_with_one_line(prefect_server, env, tmp_path, monkeypatch, refusal, line):
    import localai.vertex.models

    vertex = env.service.vertex
    if refusal == "model":
        monkeypatch.setattr(localai.vertex.models, "TUNABLE", ("gemini-2.5-pro",))
    elif refusal == "permission":
        vertex.config = vertex.config.model_copy(update={"refusal": "Tuning is off."})
    else:
        vertex.config = vertex.config.model_copy(update={"daily_job_limit": 0})
        monkeypatch.setenv("FTFLOW_QUOTA_WAIT_SECONDS", "0")
    result = CliRunner().invoke(app, ["retrain", "--backend", "vertex", "--model", MODEL,
                                      "--runs-dir", str(tmp_path / "runs"), *SAMPLES])
    assert result.exit_code == 4, result.output
    errors = [x for x in result.output.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and line in errors[0], result.output
