"""The retrain and finetune flows end to end on the local service, with Prefect's test server."""

from __future__ import annotations

import json
import os
import random
import re
import string
import threading
import time
from datetime import UTC, datetime

import pytest
from prefect.client.orchestration import get_client
from prefect.states import Cancelling
from typer.testing import CliRunner

from flows.finetune import finetune
from flows.prepare import prepare
from flows.retrain import retrain
from ftflow.cli import app
from ftflow.errors import JobFailed, UploadRejected
from ftflow.providers.base import KEY_FIELD
from ftflow.store.lineage import LineageStore
from tasks.report import dataset_sha256
from tests.conftest import ROOT, chat, write_jsonl

pytestmark = [pytest.mark.flow, pytest.mark.service]
SAMPLES = [str(ROOT / "data/raw/*")]


@pytest.fixture
def pipeline_env(local_service, tmp_path, monkeypatch):
    """Settings that point the flows at the test's service and registry."""
    monkeypatch.setenv("FTFLOW_SERVICE_URL", local_service.base_url)
    monkeypatch.setenv("FTFLOW_SERVICE_API_KEY", local_service.api_key)
    monkeypatch.setenv("FTFLOW_REGISTRY_URL", f"sqlite:///{tmp_path / 'registry.sqlite3'}")
    monkeypatch.setenv("FTFLOW_POLL_INITIAL_SECONDS", "0.05")
    monkeypatch.setenv("FTFLOW_POLL_MAX_SECONDS", "0.2")
    return local_service


def test_retrain_end_to_end_then_skip_when_unchanged(prefect_server, pipeline_env, tmp_path):
    runs = str(tmp_path / "runs")
    record = retrain(SAMPLES, overrides={"runs_dir": runs, "system_prompt": "Du bist der Alpenrad-Support."})
    assert record["status"] == "succeeded"
    assert record["fine_tuned_model"].startswith("ft:gpt-4o-mini-2024-07-18:ftflow-local:ftflow:")
    assert record["trained_tokens"] == record["estimated_billing_tokens"] == record["prepare"]["billing_tokens"]
    assert record["training_metrics"]["steps"] > 0
    run_json = json.loads((tmp_path / "runs" / record["run_id"] / "run.json").read_text())
    assert run_json["job_id"] == record["job_id"]
    # The fine-tuned model beats the base model with the long prompt on F1, format and language. But it
    # answers with the training answer of the nearest question (the local service's over-fitted model):
    # another customer's order number, bike and city. Fact recall catches that, and the gate refuses it.
    candidate, baseline = record["evaluation"]["candidate"], record["evaluation"]["baseline"]
    assert candidate["f1"] > baseline["f1"] + 0.3 and candidate["json_valid_rate"] == 1.0
    assert candidate["language_rate"] > 0.9 > baseline["language_rate"]
    assert candidate["fact_recall"] < candidate["f1"] - 0.3 and candidate["ci95"]["fact_recall"][1] < 0.9
    assert record["promoted"] is False and record["tokens_reconciliation"]["flagged"] is False
    assert "fact_recall" in record["promotion"]["reasons"][0]
    assert record["economics"]["training_cost_usd"] > 0
    evaluation = json.loads((tmp_path / "runs" / record["run_id"] / "eval.json").read_text())
    assert evaluation["examples"] > 0
    with_order = [e for e in evaluation["per_example"]["candidate"] if re.search(r"AR-\d+", e["reference"])]
    wrong = [e for e in with_order if re.search(r"AR-\d+", e["reference"]).group() not in e["answer"]]
    assert wrong and all(e["fact_recall"] < 1.0 and e["missed_facts"] for e in wrong)
    assert CliRunner().invoke(app, ["models", "current"]).exit_code == 1  # nothing promoted
    # An operator's earlier promotion of it: the forced run below is compared with it as the incumbent.
    LineageStore(os.environ["FTFLOW_REGISTRY_URL"]).promote(record["base_model"], record["fine_tuned_model"],
                                                            record["run_id"], backend="local")
    current = CliRunner().invoke(app, ["models", "current"])
    assert current.exit_code == 0 and f"model: {record['fine_tuned_model']}" in current.output
    assert "backend: local" in current.output

    skipped = retrain(SAMPLES, overrides={"runs_dir": runs, "system_prompt": "Du bist der Alpenrad-Support."}, return_state=True)
    assert skipped.is_completed() and skipped.name == "Skipped"  # not a plain "Completed" like a trained run
    again = skipped.result()
    assert again["status"] == "skipped" and "unchanged" in again["reason"]
    # Decided from the sources' and settings' digest, before preparing: nothing was prepared.
    assert "not prepared again" in again["reason"] and again["prepare"] is None
    assert again["dataset_sha256"] == record["dataset_sha256"]
    assert not (tmp_path / "runs" / again["run_id"] / "train.jsonl").exists()
    assert len(record["prepare"]["inputs_sha256"]) == 64
    state = pipeline_env.service.openai
    assert len(state.store.list("job")) == 1
    assert len([f for f in state.store.list("file") if f["purpose"] == "fine-tune"]) == 2  # train + validation

    forced = retrain(SAMPLES, overrides={"runs_dir": runs, "system_prompt": "Du bist der Alpenrad-Support."}, force=True)
    assert forced["status"] == "succeeded" and forced["job_id"] != record["job_id"]
    # Drift is checked against the last successful run's features; the same data has not drifted.
    assert forced["prepare"]["quality"]["drift"]["previous"] == record["prepare"]["quality"]["features"]
    # The promoted model and the candidate answered the same held-out examples.
    assert forced["evaluation"]["current"]["examples_sha256"] == forced["evaluation"]["candidate"]["examples_sha256"]
    assert forced["eval_examples_sha256"] == record["eval_examples_sha256"]
    assert len([f for f in state.store.list("file") if f["purpose"] == "fine-tune"]) == 2  # reused, not re-uploaded


def test_changed_sources_that_give_the_same_dataset_are_prepared_then_skipped(prefect_server, pipeline_env,
                                                                             tmp_path):
    source = write_jsonl(tmp_path / "chats.jsonl", [chat(f"Wo ist Bestellung {i}?", f"Sie ist unterwegs ({i}).")
                                                    for i in range(60)])
    runs = str(tmp_path / "runs")
    first = retrain([str(source)], overrides={"runs_dir": runs})
    assert first["status"] == "succeeded"

    with open(source, "a", encoding="utf-8") as f:  # a line that is rejected: the dataset stays the same
        f.write("{not json\n")
    second = retrain([str(source)], overrides={"runs_dir": runs})
    assert second["status"] == "skipped" and second["prepare"] is not None  # prepared, then compared
    assert second["prepare"]["inputs_sha256"] != first["prepare"]["inputs_sha256"]
    assert second["dataset_sha256"] == first["dataset_sha256"] and "is unchanged since run" in second["reason"]

    # A gate differs from the last successful run's: prepared again, for the gates to decide.
    third = retrain([str(source)], overrides={"runs_dir": runs, "max_cost_usd": 50.0})
    assert third["prepare"] is not None and third["prepare"]["max_cost_usd"] == 50.0


def test_without_held_out_examples_the_model_is_not_evaluated_nor_promoted(prefect_server, pipeline_env, tmp_path,
                                                                            monkeypatch):
    # Issue 11: with 0 validation examples the gate said "F1 0.000 does not beat 0.000".
    monkeypatch.setenv("FTFLOW_VALIDATION_FRACTION", "0")
    source = write_jsonl(tmp_path / "chats.jsonl", [chat(f"Frage {i}", f"Antwort {i}") for i in range(12)])
    record = retrain([str(source)], overrides={"runs_dir": str(tmp_path / "runs")})
    assert record["status"] == "succeeded" and record["promoted"] is False and record["eval_examples"] == 0
    assert record["promotion"]["reasons"] == ["not evaluated: no held-out validation examples "
                                              "(validation.jsonl is empty)"]
    assert record["evaluation"] == {} and record["economics"] is None


def test_a_dataset_of_unrelated_answers_is_not_promoted(prefect_server, pipeline_env, tmp_path):
    rng = random.Random(3)
    vocabulary = ["".join(rng.choice(string.ascii_lowercase) for _ in range(7)) for _ in range(2000)]
    lines = [chat(f"Wo ist meine Bestellung AR-{i}? Ich warte auf mein Talblitz.", " ".join(rng.sample(vocabulary, 8)))
             for i in range(60)]
    source = write_jsonl(tmp_path / "unrelated.jsonl", lines)
    record = retrain([str(source)], overrides={"runs_dir": str(tmp_path / "runs")})
    assert record["status"] == "succeeded" and record["promoted"] is False
    assert "does not beat the baseline" in record["promotion"]["reasons"][0]
    assert CliRunner().invoke(app, ["models", "current"]).exit_code == 1  # nothing promoted


def test_openai_backend_key_never_reaches_parameters_logs_artifacts_or_records(
        prefect_server, local_service, tmp_path, monkeypatch):
    """The `openai` backend, pointed at the local service by OPENAI_BASE_URL: the same flow code."""
    monkeypatch.setenv("OPENAI_BASE_URL", local_service.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", local_service.api_key)
    monkeypatch.setenv("FTFLOW_REGISTRY_URL", f"sqlite:///{tmp_path / 'registry.sqlite3'}")
    monkeypatch.setenv("FTFLOW_POLL_INITIAL_SECONDS", "0.05")
    started = datetime.now(UTC)
    record = retrain(SAMPLES, overrides={"runs_dir": str(tmp_path / "runs"), "backend": "openai", "max_cost_usd": 5.0})
    assert record["status"] == "succeeded" and record["backend"] == "openai"
    key = local_service.api_key

    async def everything_prefect_stored_of_this_run():
        from prefect.client.schemas.filters import (
            ArtifactFilter,
            ArtifactFilterFlowRunId,
            FlowRunFilter,
            FlowRunFilterStartTime,
            LogFilter,
            LogFilterFlowRunId,
        )

        async with get_client() as client:
            # The session's server holds every earlier test's runs too, and each read returns
            # at most a page (200): read this run's, all of them.
            runs = await read_all(client.read_flow_runs, flow_run_filter=FlowRunFilter(
                start_time=FlowRunFilterStartTime(after_=started)))
            ids = [run.id for run in runs]
            logs = await read_all(client.read_logs, log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)))
            artifacts = await read_all(client.read_artifacts, artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=ids)))
            return runs, logs, artifacts

    import asyncio

    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=30)  # logs are sent in batches: check the last ones too
    runs, logs, artifacts = asyncio.run(everything_prefect_stored_of_this_run())
    assert str(record["flow_run_id"]) in {str(run.id) for run in runs} and len(runs) > 1  # retrain and its subflows
    assert str(record["flow_run_id"]) in {str(log.flow_run_id) for log in logs} and artifacts
    assert all(key not in json.dumps(r.parameters, default=str) for r in runs)
    assert all(key not in log.message for log in logs)
    assert all(key not in json.dumps(a.data, default=str) for a in artifacts)
    assert key not in json.dumps(record, default=str)
    for path in (tmp_path / "runs" / record["run_id"]).rglob("*"):  # plots/ too
        assert path.is_dir() or key not in path.read_text(errors="replace"), path


def test_a_run_that_fails_is_recorded_with_its_reason(prefect_server, pipeline_env, tmp_path):
    """The budget gate stops the run: `ftflow runs` still lists it, failed, with the gate's reason."""
    from ftflow.errors import FtflowError
    from ftflow.store.lineage import LineageStore

    with pytest.raises(FtflowError) as raised:
        retrain(SAMPLES, overrides={"runs_dir": str(tmp_path / "runs"), "max_cost_usd": 0.000001})
    [record] = LineageStore(f"sqlite:///{tmp_path / 'registry.sqlite3'}").list_runs()
    assert record["status"] == "failed" and record["reason"] == " ".join(str(raised.value).split())
    assert "job_id" not in record and (tmp_path / "runs" / record["run_id"] / "run.json").exists()
    listed = CliRunner().invoke(app, ["runs"], terminal_width=200)
    assert listed.exit_code == 0 and "failed" in listed.output
    shown = CliRunner().invoke(app, ["runs", "show", record["run_id"]], terminal_width=200)
    assert shown.exit_code == 0 and "failed:" in shown.output
    # The next run trains; its history artifact lists the failed run, with no cell the UI shows as a bullet.
    succeeded = retrain(SAMPLES, overrides={"runs_dir": str(tmp_path / "runs")})
    assert succeeded["status"] == "succeeded"

    async def history():
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

        async with get_client() as client:
            [found] = await client.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["ftflow-history"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[succeeded["flow_run_id"]])))
            return found.data

    import asyncio

    data = asyncio.run(history())
    rows = data if isinstance(data, list) else json.loads(data)
    assert [row["outcome"] for row in rows] == ["not promoted", "failed"]
    assert "-" not in rows[1].values() and rows[1]["dataset"] == "\u2014"


def test_a_failed_jobs_provider_error_reaches_the_record_the_summary_and_the_error_line(
        prefect_server, pipeline_env, tmp_path):
    """The provider's code, message, param and line, verbatim: in run.json, the summary and the one error line."""
    import httpx

    message = 'The job failed due to an invalid training file. Invalid file format. Line 7, key "messages": bad.'
    httpx.put(f"{pipeline_env.base_url.removesuffix('/v1')}/_admin/faults",
              json={"job_error": {"code": "invalid_training_file", "message": message, "param": "training_file"}},
              headers={"Authorization": f"Bearer {pipeline_env.api_key}"}).raise_for_status()
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["retrain", *SAMPLES, "--runs-dir", str(runs)])
    assert result.exit_code == 4, (result.output, result.stderr)
    [line] = result.stderr.splitlines()
    assert line.startswith("error: fine-tuning job ftjob-") and line.endswith(
        f"failed; the provider says (code 'invalid_training_file', param 'training_file', line 7): {message}")
    [run_json] = runs.glob("*/run.json")
    record = json.loads(run_json.read_text())
    assert record["status"] == "failed" and record["job_id"] in line
    assert record["provider_error"] == {"code": "invalid_training_file", "message": message,
                                        "param": "training_file", "line": 7}

    async def summary():
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

        async with get_client() as client:
            [found] = await client.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["ftflow-summary"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[record["flow_run_id"]])))
            return found.data

    import asyncio

    text = asyncio.run(summary())
    assert "## Provider error" in text and "| code | `invalid_training_file` |" in text
    assert f"| message | `{message}` |" in text and "| line | `7` |" in text


def test_two_retrains_on_one_job_slot_take_turns_and_the_second_says_it_waited(
        prefect_server, pipeline_env, tmp_path, monkeypatch):
    """The service runs one job at a time (--max-running-jobs 1) and ftflow holds one job slot:
    both retrains succeed, their jobs never overlap, and the one that waited says so in its log."""
    import asyncio

    from prefect.logging.handlers import APILogWorker

    monkeypatch.setenv("FTFLOW_JOB_SLOTS", "1")
    jobs = pipeline_env.service.openai.jobs
    jobs.max_running_jobs = 0  # until the second run waits, the first one's job stays queued, holding the slot
    sources = {}
    for name in ("nord", "sued"):
        sources[name] = write_jsonl(tmp_path / f"{name}.jsonl", [
            chat(f"Frage {i} aus {name}: Wo ist Bestellung AR-{i}?", f'{{"antwort": "{name} {i} ist unterwegs"}}')
            for i in range(40)])
    started = datetime.now(UTC)
    records: dict[str, dict] = {}

    def run(name: str) -> None:
        records[name] = retrain([str(sources[name])], overrides={"runs_dir": str(tmp_path / "runs"), "suffix": name})

    async def slot_lines() -> list[str]:
        from prefect.client.schemas.filters import LogFilter, LogFilterTimestamp

        async with get_client() as client:
            logs = await read_all(client.read_logs, log_filter=LogFilter(timestamp=LogFilterTimestamp(after_=started)))
        return [log.message for log in logs if "job slot on local" in log.message]

    def wait_until(condition, what: str) -> None:
        deadline = time.monotonic() + 180
        while not condition():
            assert time.monotonic() < deadline, what
            time.sleep(0.5)

    first = threading.Thread(target=run, args=("nord",))
    first.start()
    wait_until(lambda: jobs.store.list("job"), "the first run created no job")
    second = threading.Thread(target=run, args=("sued",))
    second.start()

    def second_waits() -> bool:
        APILogWorker.drain_all(timeout=10)
        return any(line.startswith("waiting for a job slot on local: 1 of 1 in use") for line in asyncio.run(slot_lines()))

    wait_until(second_waits, "the second run never said it was waiting for a job slot")
    assert len(jobs.store.list("job")) == 1  # it waits before creating its job
    jobs.max_running_jobs = 1
    for thread in (first, second):
        thread.join(timeout=300)
    assert {name: r["status"] for name, r in records.items()} == {"nord": "succeeded", "sued": "succeeded"}
    done = {name: jobs.get(r["job_id"]) for name, r in records.items()}
    assert done["sued"]["created_at"] >= done["nord"]["finished_at"]  # never overlapping on the service
    APILogWorker.drain_all(timeout=30)
    lines = asyncio.run(slot_lines())
    assert sum(line.startswith("waiting for a job slot on local") for line in lines) == 1, lines
    assert sum(line.startswith("got a job slot on local after waiting") for line in lines) == 1, lines


async def read_all(read, **filters) -> list:
    """Every row a Prefect client read returns, page by page (the server caps a page at 200)."""
    rows: list = []
    while page := await read(**filters, limit=200, offset=len(rows)):
        rows += page
    return rows


def dataset(tmp_path, lines: list, name: str = "ds"):
    folder = tmp_path / name
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", lines)
    (folder / "validation.jsonl").write_text("")
    sha = dataset_sha256(folder / "train.jsonl", folder / "validation.jsonl")
    (folder / "report.json").write_text(json.dumps({"dataset_sha256": sha, "n_epochs": 2, "estimated_cost_usd": 0.01,
                                                    "gate": {"passed": True, "failures": []}}))
    return str(folder)


def test_a_provider_rejected_file_fails_the_run(prefect_server, pipeline_env, tmp_path):
    folder = dataset(tmp_path, ["{not json", *[chat(f"q{i}", f"a{i}") for i in range(12)]])
    with pytest.raises(UploadRejected, match="not valid JSON"):
        finetune(folder)


def test_a_failed_job_fails_the_run_with_the_providers_error(prefect_server, pipeline_env, tmp_path):
    folder = dataset(tmp_path, [chat("<|endoftext|>", "a"), *[chat(f"q{i}", f"a{i}") for i in range(12)]])
    with pytest.raises(JobFailed, match="invalid_training_file.*special token"):
        finetune(folder)


def test_cancelling_the_flow_run_cancels_the_job(prefect_server, pipeline_env, tmp_path):
    pipeline_env.service.openai.jobs.seconds_per_1k_tokens = 20.0  # long enough to cancel mid-run
    folder = dataset(tmp_path, [chat(f"Frage {i}", f"Antwort {i}") for i in range(40)])
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.update(state=finetune(folder, return_state=True)))
    runner.start()
    store = pipeline_env.service.openai.store
    deadline = time.monotonic() + 60
    while not any(j["status"] == "running" for j in store.list("job")):
        assert time.monotonic() < deadline and runner.is_alive()
        time.sleep(0.1)

    async def cancel_running_finetune() -> int:
        from prefect.client.schemas.filters import (
            FlowFilter,
            FlowFilterName,
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
        )
        from prefect.client.schemas.objects import StateType

        async with get_client() as client:
            # Filtered by the server: unfiltered, a read returns one page of the session's runs.
            running = await client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["finetune"])),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.RUNNING]))))
            for run in running:
                await client.set_flow_run_state(run.id, Cancelling(), force=True)
            return len(running)

    import asyncio

    assert asyncio.run(cancel_running_finetune()) == 1
    runner.join(timeout=60)
    assert outcome["state"].is_cancelled()
    [job] = store.list("job")
    assert job["status"] == "cancelled" and job["metadata"][KEY_FIELD]


def test_prepare_then_finetune_reuses_files_across_flows(prefect_server, pipeline_env, tmp_path):
    out = tmp_path / "prepared"
    prepare(SAMPLES, out_dir=str(out))
    first = finetune(str(out))
    second = finetune(str(out))
    assert second["job_id"] == first["job_id"] and second["created"] is False
    assert second["training_file"] == first["training_file"]


def test_finetune_runs_under_faults_make_one_file_per_content_and_one_job(prefect_server, pipeline_env, tmp_path,
                                                                           monkeypatch):
    from tests.integration.test_service_faults import set_faults

    monkeypatch.setenv("FTFLOW_REQUEST_TIMEOUT_SECONDS", "0.5")
    # A slow create registers 0.8 s after it was sent: look for it 3 s (as the other fault tests do), not the
    # default 90 s that each injected 5xx, which creates nothing, would otherwise wait out.
    for name, value in {"LOOKUP_DEADLINE_SECONDS": "3", "LOOKUP_INTERVAL_SECONDS": "0.1", "BACKOFF_SECONDS": "0.01"}.items():
        monkeypatch.setenv(f"FTFLOW_{name}", value)
    folder = dataset(tmp_path, [chat(f"Frage {i}", f"Antwort {i}") for i in range(20)])
    creates = {"rate_limit": 0.2, "server_error": 0.2, "slow": 0.15, "lost_response": 0.25, "retry_after": 0.01,
               "slow_seconds": 0.8}
    set_faults(pipeline_env, {"files.create": creates, "fine_tuning.jobs.create": creates,
                              "*": {"rate_limit": 0.05, "retry_after": 0.01}}, seed=11)
    results = [finetune(folder) for _ in range(3)]
    injected = dict(pipeline_env.service.faults.injected)
    set_faults(pipeline_env, {})
    assert any(k.startswith(("files.create", "fine_tuning.jobs.create")) for k in injected), injected
    assert len({r["job_id"] for r in results}) == 1 and len({r["training_file"] for r in results}) == 1
    state = pipeline_env.service.openai.store
    assert len([f for f in state.list("file") if f["purpose"] == "fine-tune"]) == 1
    assert len(state.list("job")) == 1
