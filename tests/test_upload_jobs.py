"""Uploads and job creation against the local service: content addressing, exactly once."""

from __future__ import annotations

import json
import threading

import openai
import pytest

from ftflow.errors import JobCancelled, JobFailed, JobTimeout, ProviderRefused, UploadRejected
from tasks.jobs import KEY_FIELD, JobRequest, create_job_once, poll_job, training_metrics
from tasks.registry import Registry
from tasks.upload import ensure_uploaded
from tests.conftest import training_bytes
from tests.test_service_faults import set_faults

pytestmark = pytest.mark.service
PROVIDER = "local:test"


@pytest.fixture
def registry(tmp_path):
    return Registry(f"sqlite:///{tmp_path / 'registry.sqlite3'}")


@pytest.fixture
def train_file(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(training_bytes(n=20))
    return path


def request_for(file_id: str, **overrides) -> JobRequest:
    return JobRequest(**{"model": "gpt-4o-mini-2024-07-18", "training_file": file_id, "validation_file": None,
                         "dataset_sha256": "d" * 64, "suffix": "t", "hyperparameters": {"n_epochs": 2}, **overrides})


def test_same_content_is_uploaded_once(client, registry, train_file, tmp_path):
    first = ensure_uploaded(client, registry, PROVIDER, train_file, part_bytes=1 << 20)
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(train_file.read_bytes())
    again = ensure_uploaded(client, registry, PROVIDER, copy, part_bytes=1 << 20)
    assert again.file_id == first.file_id and again.reused and not first.reused
    # Even without the ledger, the provider's file list finds it by its content-addressed name.
    fresh_registry = Registry(f"sqlite:///{tmp_path / 'other.sqlite3'}")
    assert ensure_uploaded(client, fresh_registry, PROVIDER, copy, part_bytes=1 << 20).file_id == first.file_id
    assert len(client.files.list(purpose="fine-tune").data) == 1


def test_large_files_go_through_uploads_in_parts(client, registry, train_file):
    uploaded = ensure_uploaded(client, registry, PROVIDER, train_file, part_bytes=1000)
    assert client.files.content(uploaded.file_id).content == train_file.read_bytes()
    assert client.files.retrieve(uploaded.file_id).filename == f"ftflow-{uploaded.sha256}.jsonl"


def test_a_rejected_file_fails_with_the_providers_reason(client, registry, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"{not json\n" + training_bytes())
    with pytest.raises(UploadRejected, match="Line 1 is not valid JSON"):
        ensure_uploaded(client, registry, PROVIDER, bad, part_bytes=1 << 20)


def test_job_is_created_once_and_attached_to_afterwards(client, registry, train_file):
    file = ensure_uploaded(client, registry, PROVIDER, train_file, part_bytes=1 << 20)
    job, created = create_job_once(client, registry, PROVIDER, request_for(file.file_id))
    again, created_again = create_job_once(client, registry, PROVIDER, request_for(file.file_id))
    assert created and not created_again and again.id == job.id
    assert registry.job_entry(PROVIDER, request_for(file.file_id).key)["job_id"] == job.id
    other, created_other = create_job_once(client, registry, PROVIDER, request_for(file.file_id, force_nonce="x"))
    assert created_other and other.id != job.id


def test_a_provider_that_ignores_the_metadata_filter_does_not_fool_the_lookup(local_service, client, registry,
                                                                              train_file, monkeypatch):
    jobs = local_service.service.jobs
    unfiltered = jobs.list_jobs
    monkeypatch.setattr(jobs, "list_jobs", lambda *, after, limit, metadata: unfiltered(after=after, limit=limit,
                                                                                      metadata=None))
    file = ensure_uploaded(client, registry, PROVIDER, train_file, part_bytes=1 << 20)
    first, _ = create_job_once(client, registry, PROVIDER, request_for(file.file_id))
    second, created = create_job_once(client, registry, PROVIDER, request_for(file.file_id, suffix="other"))
    assert created and second.id != first.id


def test_crash_between_create_and_record_attaches_on_rerun(client, registry, train_file, monkeypatch):
    file = ensure_uploaded(client, registry, PROVIDER, train_file, part_bytes=1 << 20)
    request = request_for(file.file_id)
    real_record = registry.record_job

    def crash_after_create(provider, key, *, job_id, status, flow_run_id=None):
        if status == "created":
            raise SystemExit("simulated crash right after the create call")
        real_record(provider, key, job_id=job_id, status=status, flow_run_id=flow_run_id)

    monkeypatch.setattr(registry, "record_job", crash_after_create)
    with pytest.raises(SystemExit):
        create_job_once(client, registry, PROVIDER, request)
    assert registry.job_entry(PROVIDER, request.key)["status"] == "creating"
    monkeypatch.setattr(registry, "record_job", real_record)
    job, created = create_job_once(client, registry, PROVIDER, request)
    assert not created
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={KEY_FIELD: request.key})] == [job.id]


def test_faults_never_duplicate_files_or_jobs(local_service, registry, tmp_path):
    """Many runs under 429/5xx/slow/lost-response faults: one file per content, one job per key."""
    creates = {"rate_limit": 0.15, "server_error": 0.15, "slow": 0.15, "lost_response": 0.25, "retry_after": 0.01,
               "slow_seconds": 0.6}
    set_faults(local_service, {
        "files.create": creates,
        "fine_tuning.jobs.create": creates,
        "*": {"rate_limit": 0.1, "retry_after": 0.01},  # lookups and reads: throttled now and then
    }, seed=7)
    client = openai.OpenAI(base_url=local_service.base_url, api_key=local_service.api_key, max_retries=5,
                           timeout=0.4)
    datasets = []
    for i in range(8):
        path = tmp_path / f"d{i}.jsonl"
        path.write_bytes(training_bytes(n=12, offset=100 * i))
        datasets.append(path)
    for _run in range(2):
        for path in datasets:
            file = ensure_uploaded(client, registry, PROVIDER, path, part_bytes=1 << 20)
            create_job_once(client, registry, PROVIDER, request_for(file.file_id, dataset_sha256=file.sha256),
                            grace_seconds=1.5)
    state = local_service.service
    kinds = {key.split(":")[1] for key in state.faults.injected}
    assert kinds == {"rate_limit", "server_error", "slow", "lost_response"}, state.faults.injected
    set_faults(local_service, {})
    files = [f for f in state.store.list("file") if f["purpose"] == "fine-tune"]
    jobs = state.store.list("job")
    assert len(files) == len(datasets) and len({f["filename"] for f in files}) == len(datasets)
    keys = [j["metadata"][KEY_FIELD] for j in jobs]
    assert len(keys) == len(set(keys)) == len(datasets)


def test_poll_streams_each_event_once_and_returns_metrics(client, registry, train_file):
    file = ensure_uploaded(client, registry, PROVIDER, train_file, part_bytes=1 << 20)
    job, _ = create_job_once(client, registry, PROVIDER, request_for(file.file_id))
    seen, progress = [], []
    done = poll_job(client, job.id, initial=0.05, maximum=0.2, timeout=30, on_event=seen.append,
                    on_progress=lambda s, t: progress.append((s, t)))
    assert done.status == "succeeded"
    ids = [e.id for e in seen]
    assert len(ids) == len(set(ids)) == len(client.fine_tuning.jobs.list_events(job.id, limit=1000).data)
    assert seen[0].message.startswith("Validating training file") and seen[-1].message == "The job has successfully completed"
    assert progress[-1][0] == progress[-1][1]
    metrics = training_metrics(client, done)
    assert metrics["steps"] == progress[-1][1] and metrics["final_train_loss"] < metrics["curve"][0]["train_loss"]


def test_poll_raises_on_failure_cancel_and_deadline(local_service, client, registry, tmp_path):
    poisoned = tmp_path / "p.jsonl"
    poisoned.write_bytes(training_bytes().replace(b"Frage 2", b"<|endoftext|>"))
    file = ensure_uploaded(client, registry, PROVIDER, poisoned, part_bytes=1 << 20)
    job, _ = create_job_once(client, registry, PROVIDER, request_for(file.file_id))
    with pytest.raises(JobFailed, match="invalid_training_file") as info:
        poll_job(client, job.id, initial=0.05, maximum=0.1, timeout=30, on_event=lambda e: None)
    assert info.value.code == "invalid_training_file"

    local_service.service.jobs.seconds_per_1k_tokens = 10.0
    good = tmp_path / "g.jsonl"
    good.write_bytes(training_bytes(n=15))
    file = ensure_uploaded(client, registry, PROVIDER, good, part_bytes=1 << 20)
    slow, _ = create_job_once(client, registry, PROVIDER, request_for(file.file_id))
    with pytest.raises(JobTimeout):
        poll_job(client, slow.id, initial=0.05, maximum=0.1, timeout=0.5, on_event=lambda e: None)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(JobCancelled, match="cancelled fine-tuning job"):
        poll_job(client, slow.id, initial=0.05, maximum=0.1, timeout=30, on_event=lambda e: None,
                 should_cancel=cancel.is_set)
    assert client.fine_tuning.jobs.retrieve(slow.id).status == "cancelled"


def test_cancellation_hook_cancels_the_flow_runs_running_jobs(local_service, client, registry, train_file,
                                                               monkeypatch):
    from types import SimpleNamespace

    from tasks.jobs import cancel_flow_run_jobs

    monkeypatch.setenv("FTFLOW_SERVICE_URL", local_service.base_url)
    monkeypatch.setenv("FTFLOW_SERVICE_API_KEY", local_service.api_key)
    monkeypatch.setenv("FTFLOW_REGISTRY_URL", str(registry.engine.url))
    local_service.service.jobs.seconds_per_1k_tokens = 10.0
    file = ensure_uploaded(client, registry, PROVIDER, train_file, part_bytes=1 << 20)
    mine, _ = create_job_once(client, registry, PROVIDER, request_for(file.file_id), flow_run_id="run-1")
    other, _ = create_job_once(client, registry, PROVIDER, request_for(file.file_id, suffix="o"), flow_run_id="run-2")
    cancel_flow_run_jobs(None, SimpleNamespace(id="run-1", parameters={}), None)
    assert client.fine_tuning.jobs.retrieve(mine.id).status == "cancelled"
    assert client.fine_tuning.jobs.retrieve(other.id).status != "cancelled"
    cancel_flow_run_jobs(None, SimpleNamespace(id="run-1", parameters={}), None)  # twice is harmless


def test_provider_refusal_is_clear_and_not_retried(local_service, client, registry, train_file):
    file = ensure_uploaded(client, registry, PROVIDER, train_file, part_bytes=1 << 20)
    local_service.service.jobs.refusal = "Fine-tuning is no longer available for this organization."
    with pytest.raises(ProviderRefused, match="may not create fine-tuning jobs"):
        create_job_once(client, registry, PROVIDER, request_for(file.file_id))
    local_service.service.jobs.refusal = None
    local_service.service.jobs.daily_job_limit = 0
    with pytest.raises(ProviderRefused, match="daily fine-tuning job limit"):
        create_job_once(client, registry, PROVIDER, request_for(file.file_id))
    assert json.dumps(local_service.service.store.list("job")) == "[]"
