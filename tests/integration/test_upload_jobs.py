"""Uploads and job creation against the local service: content addressing, exactly once, the ledger."""

from __future__ import annotations

import json
import threading
import time

import openai
import pytest

from ftflow.errors import (
    BudgetExceeded,
    DataError,
    JobCancelled,
    JobFailed,
    JobTimeout,
    ProviderRefused,
    UploadRejected,
)
from ftflow.exactly_once import OncePolicy
from ftflow.providers import get_provider
from ftflow.providers.base import KEY_FIELD, JobSpec
from ftflow.settings import get_settings
from ftflow.store.ledger import Ledger
from tasks.jobs import (
    QuotaWait,
    create_job_once,
    poll_job,
    reconcile_creating,
    training_metrics,
    verify_dataset,
)
from tasks.upload import ensure_uploaded
from tests.conftest import training_bytes
from tests.integration.test_service_faults import set_faults

pytestmark = pytest.mark.service
FAST = OncePolicy(lookup_deadline_seconds=1.5, lookup_interval_seconds=0.1, backoff_seconds=0.01, lease_seconds=5)


@pytest.fixture
def ledger(tmp_path):
    return Ledger(f"sqlite:///{tmp_path / 'registry.sqlite3'}")


def provider_for(service, *, timeout: float = 60, part_bytes: int = 1 << 20, max_retries: int = 0, key=None):
    settings = get_settings(backend="local", service_url=service.base_url, request_timeout_seconds=timeout,
                            upload_part_bytes=part_bytes)
    import os

    os.environ["FTFLOW_SERVICE_API_KEY"] = key or service.api_key
    provider = get_provider(settings)
    provider.client = provider.client.with_options(max_retries=max_retries)
    return provider


@pytest.fixture
def provider(local_service, monkeypatch):
    monkeypatch.setenv("FTFLOW_SERVICE_API_KEY", local_service.api_key)
    return provider_for(local_service)


@pytest.fixture
def train_file(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(training_bytes(n=20))
    return path


def spec_for(file_id: str, **overrides) -> JobSpec:
    return JobSpec(**{"model": "gpt-4o-mini-2024-07-18", "training_file": file_id, "validation_file": None,
                      "dataset_sha256": "d" * 64, "suffix": "t", "hyperparameters": {"n_epochs": 2}, **overrides})


def upload(provider, ledger, path, policy=FAST):
    return ensure_uploaded(provider, ledger, path, policy=policy)


def create(provider, ledger, spec, policy=FAST, **kw):
    job, created, _ = create_job_once(provider, ledger, spec, policy=policy, **kw)
    return job, created


def test_same_content_is_uploaded_once(provider, client, ledger, train_file, tmp_path):
    first = upload(provider, ledger, train_file)
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(train_file.read_bytes())
    again = upload(provider, ledger, copy)
    assert again.file_id == first.file_id and again.reused and not first.reused
    # Even without the ledger, the provider's file list finds it by its content-addressed name.
    fresh_ledger = Ledger(f"sqlite:///{tmp_path / 'other.sqlite3'}")
    assert upload(provider, fresh_ledger, copy).file_id == first.file_id
    assert len(client.files.list(purpose="fine-tune").data) == 1


def test_large_files_go_through_uploads_in_parts(local_service, client, ledger, train_file):
    uploaded = upload(provider_for(local_service, part_bytes=1000), ledger, train_file)
    assert client.files.content(uploaded.file_id).content == train_file.read_bytes()
    assert client.files.retrieve(uploaded.file_id).filename == f"ftflow-{uploaded.sha256}.jsonl"


def test_a_multipart_upload_resumes_from_the_parts_already_accepted(local_service, client, ledger, train_file):
    provider = provider_for(local_service, part_bytes=1000)
    sent = []
    real = provider.client.uploads.parts.create

    def fail_on_third(**kwargs):
        if len(sent) == 2:
            raise openai.InternalServerError("injected", response=_response(500), body=None)
        sent.append(1)
        return real(**kwargs)

    provider.client.uploads.parts.create = fail_on_third  # type: ignore[method-assign]
    with pytest.raises(openai.InternalServerError):
        provider.upload_file(train_file, "ftflow-x.jsonl", progress=_progress(ledger, provider, "x"))
    assert len(ledger.open_upload(provider.identity, "x")["part_ids"]) == 2
    provider.client.uploads.parts.create = real  # type: ignore[method-assign]
    calls = []
    provider.client.uploads.parts.create = lambda **kw: calls.append(1) or real(**kw)  # type: ignore[method-assign]
    file = provider.upload_file(train_file, "ftflow-x.jsonl", progress=_progress(ledger, provider, "x"))
    parts = -(-train_file.stat().st_size // 1000)
    assert len(calls) == parts - 2  # the first two parts were not sent again
    assert client.files.content(file.id).content == train_file.read_bytes()


def _progress(ledger, provider, sha):
    from tasks.upload import LedgerUploadProgress

    return LedgerUploadProgress(ledger, provider.identity, sha)


def _response(status):
    import httpx

    return httpx.Response(status, request=httpx.Request("POST", "http://x"))


def test_a_rejected_file_fails_with_the_providers_reason(provider, ledger, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"{not json\n" + training_bytes())
    with pytest.raises(UploadRejected, match="Line 1 is not valid JSON"):
        upload(provider, ledger, bad)


def test_job_is_created_once_and_attached_to_afterwards(provider, ledger, train_file):
    file = upload(provider, ledger, train_file)
    job, created = create(provider, ledger, spec_for(file.file_id))
    again, created_again = create(provider, ledger, spec_for(file.file_id))
    assert created and not created_again and again.id == job.id
    assert ledger.job_entry(provider.identity, spec_for(file.file_id).key)["job_id"] == job.id


def test_force_attaches_to_a_job_in_flight_and_trains_anew_once_it_was_used(provider, client, ledger, train_file):
    file = upload(provider, ledger, train_file)
    first, _ = create(provider, ledger, spec_for(file.file_id))
    in_flight, created = create(provider, ledger, spec_for(file.file_id), force=True)
    assert in_flight.id == first.id and not created  # --force never ignores a job in flight
    ledger.consume_job(first.id)  # a run recorded its result
    second, created = create(provider, ledger, spec_for(file.file_id), force=True)
    assert created and second.id != first.id
    third, created = create(provider, ledger, spec_for(file.file_id), force=True)
    assert third.id == second.id and not created


def test_a_provider_that_ignores_the_metadata_filter_does_not_fool_the_lookup(local_service, provider, ledger,
                                                                              train_file, monkeypatch):
    jobs = local_service.service.openai.jobs
    unfiltered = jobs.list_jobs
    monkeypatch.setattr(jobs, "list_jobs", lambda *, after, limit, metadata: unfiltered(after=after, limit=limit,
                                                                                      metadata=None))
    file = upload(provider, ledger, train_file)
    first, _ = create(provider, ledger, spec_for(file.file_id))
    second, created = create(provider, ledger, spec_for(file.file_id, suffix="other"))
    assert created and second.id != first.id


def test_crash_between_create_and_record_is_reconciled_and_attached(provider, client, ledger, train_file,
                                                                    monkeypatch):
    file = upload(provider, ledger, train_file)
    spec = spec_for(file.file_id)
    real_record = ledger.record_job

    def crash_after_create(provider_id, key, *, status, **fields):
        if status != "creating":
            raise SystemExit("simulated crash right after the create call")
        real_record(provider_id, key, status=status, **fields)

    monkeypatch.setattr(ledger, "record_job", crash_after_create)
    with pytest.raises(SystemExit):
        create(provider, ledger, spec)
    monkeypatch.setattr(ledger, "record_job", real_record)
    assert ledger.job_entry(provider.identity, spec.key)["status"] == "creating"
    assert len(reconcile_creating(provider, ledger)) == 1
    entry = ledger.job_entry(provider.identity, spec.key)
    assert entry["status"] in ("pending", "running", "succeeded") and entry["job_id"]
    job, created = create(provider, ledger, spec_for(file.file_id), force=True)
    assert not created and job.id == entry["job_id"]
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={KEY_FIELD: spec.key})] == [job.id]


def test_concurrent_creates_of_one_key_make_one_job(local_service, ledger, train_file, tmp_path):
    file = upload(provider_for(local_service), ledger, train_file)
    results = []

    def run():
        own = Ledger(str(ledger.engine.url))
        results.append(create(provider_for(local_service), own, spec_for(file.file_id)))

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({job.id for job, _ in results}) == 1 and sum(created for _, created in results) == 1
    assert len(local_service.service.openai.store.list("job")) == 1


def test_a_lost_response_is_looked_up_past_a_slow_registration(local_service, ledger, train_file):
    """The provider registers the job 1 s after the lost response: the lookup waits for it, no second job."""
    provider = provider_for(local_service, timeout=0.5)
    file = upload(provider, ledger, train_file)
    set_faults(local_service, {"fine_tuning.jobs.create": {"slow": 1.0, "slow_seconds": 1.0, "max_faults": 1}})
    job, created = create(provider, ledger, spec_for(file.file_id),
                          policy=OncePolicy(lookup_deadline_seconds=10, lookup_interval_seconds=0.1))
    assert created and len(local_service.service.openai.store.list("job")) == 1


def test_faults_never_duplicate_files_or_jobs(local_service, ledger, tmp_path):
    """Many runs under 429/5xx/slow/lost-response faults: one file per content, one job per key."""
    creates = {"rate_limit": 0.15, "server_error": 0.15, "slow": 0.15, "lost_response": 0.25, "retry_after": 0.01,
               "slow_seconds": 0.6}
    set_faults(local_service, {
        "files.create": creates,
        "fine_tuning.jobs.create": creates,
        "*": {"rate_limit": 0.1, "retry_after": 0.01},  # lookups and reads: throttled now and then
    }, seed=7)
    provider = provider_for(local_service, timeout=0.4, max_retries=5)
    policy = OncePolicy(lookup_deadline_seconds=1.5, lookup_interval_seconds=0.1, backoff_seconds=0.01,
                        create_attempts=6)
    datasets = []
    for i in range(8):
        path = tmp_path / f"d{i}.jsonl"
        path.write_bytes(training_bytes(n=12, offset=100 * i))
        datasets.append(path)
    for _run in range(2):
        for path in datasets:
            file = upload(provider, ledger, path, policy)
            create(provider, ledger, spec_for(file.file_id, dataset_sha256=file.sha256), policy)
    state = local_service.service
    kinds = {key.split(":")[1] for key in state.faults.injected}
    assert kinds == {"rate_limit", "server_error", "slow", "lost_response"}, state.faults.injected
    set_faults(local_service, {})
    files = [f for f in state.openai.store.list("file") if f["purpose"] == "fine-tune"]
    jobs = state.openai.store.list("job")
    assert len(files) == len(datasets) and len({f["filename"] for f in files}) == len(datasets)
    keys = [j["metadata"][KEY_FIELD] for j in jobs]
    assert len(keys) == len(set(keys)) == len(datasets)


def test_poll_streams_each_event_once_and_returns_metrics(provider, client, ledger, train_file):
    from tasks.jobs import EventCursor

    file = upload(provider, ledger, train_file)
    job, _ = create(provider, ledger, spec_for(file.file_id))
    seen, progress, cursors = [], [], []
    done = poll_job(provider, job.id, initial=0.05, maximum=0.2, deadline=time.time() + 30, on_event=seen.append,
                    on_progress=lambda s, t: progress.append((s, t)), on_cursor=cursors.append)
    assert done.state == "succeeded"
    ids = [e.id for e in seen]
    assert len(ids) == len(set(ids)) == len(client.fine_tuning.jobs.list_events(job.id, limit=1000).data)
    assert seen[0].message.startswith("Validating training file") and seen[-1].message == "The job has successfully completed"
    assert progress[-1][0] == progress[-1][1] and cursors[-1] == seen[-1].id
    # A retry that resumes from the stored cursor logs nothing twice.
    again = []
    poll_job(provider, job.id, initial=0.05, maximum=0.2, deadline=time.time() + 30, on_event=again.append,
             cursor=EventCursor(cursors[-1]))
    assert again == []
    metrics = training_metrics(provider, done)
    assert metrics["steps"] == progress[-1][1] and metrics["final_train_loss"] < metrics["curve"][0]["train_loss"]


def test_poll_raises_on_failure_cancel_and_deadline(local_service, provider, client, ledger, tmp_path):
    poisoned = tmp_path / "p.jsonl"
    poisoned.write_bytes(training_bytes().replace(b"Frage 2", b"<|endoftext|>"))
    file = upload(provider, ledger, poisoned)
    job, _ = create(provider, ledger, spec_for(file.file_id))
    with pytest.raises(JobFailed, match="invalid_training_file") as info:
        poll_job(provider, job.id, initial=0.05, maximum=0.1, deadline=time.time() + 30, on_event=lambda e: None)
    assert info.value.code == "invalid_training_file"

    local_service.service.openai.jobs.seconds_per_1k_tokens = 10.0
    good = tmp_path / "g.jsonl"
    good.write_bytes(training_bytes(n=15))
    file = upload(provider, ledger, good)
    slow, _ = create(provider, ledger, spec_for(file.file_id))
    with pytest.raises(JobTimeout):
        poll_job(provider, slow.id, initial=0.05, maximum=0.1, deadline=time.time() + 0.5, on_event=lambda e: None)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(JobCancelled, match="cancelled fine-tuning job"):
        poll_job(provider, slow.id, initial=0.05, maximum=0.1, deadline=time.time() + 30, on_event=lambda e: None,
                 should_cancel=cancel.is_set)
    assert client.fine_tuning.jobs.retrieve(slow.id).status == "cancelled"


def test_a_failed_jobs_error_is_kept_verbatim_with_its_line(local_service, provider, client, ledger, tmp_path):
    poisoned = tmp_path / "p.jsonl"
    poisoned.write_bytes(training_bytes().replace(b"Frage 2", b"<|endoftext|>"))
    job, _ = create(provider, ledger, spec_for(upload(provider, ledger, poisoned).file_id))
    with pytest.raises(JobFailed) as info:
        poll_job(provider, job.id, initial=0.05, maximum=0.1, deadline=time.time() + 30, on_event=lambda e: None)
    said = client.fine_tuning.jobs.retrieve(job.id).error
    assert info.value.provider_error == {"code": "invalid_training_file", "message": said.message,
                                         "param": "training_file", "line": 3}
    assert str(info.value) == (f"fine-tuning job {job.id} failed; the provider says (code 'invalid_training_file', "
                               f"param 'training_file', line 3): {said.message}")


def test_a_job_failed_without_a_reason_says_so_with_its_last_events(local_service, provider, ledger, train_file):
    import httpx

    response = httpx.put(f"{local_service.base_url.removesuffix('/v1')}/_admin/faults",
                         json={"job_error": {"code": "", "message": ""}},
                         headers={"Authorization": f"Bearer {local_service.api_key}"})
    assert response.status_code == 200, response.text
    job, _ = create(provider, ledger, spec_for(upload(provider, ledger, train_file).file_id))
    with pytest.raises(JobFailed) as info:
        poll_job(provider, job.id, initial=0.05, maximum=0.1, deadline=time.time() + 30, on_event=lambda e: None)
    error = info.value.provider_error
    assert error["code"] is error["message"] is error["param"] is error["line"] is None
    assert error["last_events"][0] == "Fine-tuning job failed: " and error["last_events"][-1].startswith("Validating")
    assert "failed and the provider gave no reason (no code, no message); its last events, newest first: " \
           "Fine-tuning job failed:  | Validating training file: file-" in str(info.value)


def test_cancellation_hook_cancels_the_flow_runs_running_jobs(local_service, provider, client, ledger, train_file,
                                                               monkeypatch):
    from types import SimpleNamespace

    from tasks.jobs import cancel_flow_run_jobs

    monkeypatch.setenv("FTFLOW_SERVICE_URL", local_service.base_url)
    monkeypatch.setenv("FTFLOW_REGISTRY_URL", str(ledger.engine.url))
    local_service.service.openai.jobs.seconds_per_1k_tokens = 10.0
    file = upload(provider, ledger, train_file)
    mine, _ = create(provider, ledger, spec_for(file.file_id), flow_run_id="run-1")
    other, _ = create(provider, ledger, spec_for(file.file_id, suffix="o"), flow_run_id="run-2")
    cancel_flow_run_jobs(None, SimpleNamespace(id="run-1", parameters={}), None)
    assert client.fine_tuning.jobs.retrieve(mine.id).status == "cancelled"
    assert client.fine_tuning.jobs.retrieve(other.id).status != "cancelled"
    cancel_flow_run_jobs(None, SimpleNamespace(id="run-1", parameters={}), None)  # twice is harmless


def test_provider_refusal_is_clear_and_not_retried(local_service, provider, ledger, train_file):
    file = upload(provider, ledger, train_file)
    local_service.service.openai.jobs.refusal = "Fine-tuning is no longer available for this organization."
    with pytest.raises(ProviderRefused, match="may not create fine-tuning jobs"):
        create(provider, ledger, spec_for(file.file_id))
    assert json.dumps(local_service.service.openai.store.list("job")) == "[]"


OPENAI_DAILY_LIMIT = ("This fine-tune request has been rate-limited. Your organization has reached the maximum of 1 "
                      "fine-tuning requests per day for the model 'gpt-4o-mini-2024-07-18'.")


def test_a_daily_job_limit_is_waited_out_then_fails_with_the_providers_words(local_service, provider, ledger,
                                                                             train_file, client):
    file = upload(provider, ledger, train_file)
    local_service.service.openai.jobs.daily_job_limit = 1
    create(provider, ledger, spec_for(file.file_id))
    with pytest.raises(openai.RateLimitError) as raw:  # the service answers as OpenAI does
        client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=file.file_id)
    assert raw.value.status_code == 429 and raw.value.body == {
        "message": OPENAI_DAILY_LIMIT, "type": "invalid_request_error", "param": None,
        "code": "daily_rate_limit_exceeded"}
    quota = QuotaWait(seconds=0.6, initial_seconds=0.1, max_seconds=0.2)
    started = time.monotonic()
    with pytest.raises(ProviderRefused) as info:
        create(provider, ledger, spec_for(file.file_id, suffix="second"), quota=quota)
    assert 0.6 <= time.monotonic() - started < 5
    assert str(info.value).endswith(f"provider said (429 daily_rate_limit_exceeded: {OPENAI_DAILY_LIMIT})")
    assert len(local_service.service.openai.store.list("job")) == 1

    # The quota frees up while a run waits: its job is created then, once.
    threading.Timer(0.3, lambda: setattr(local_service.service.openai.jobs, "daily_job_limit", None)).start()
    job, created = create(provider, ledger, spec_for(file.file_id, suffix="third"),
                          quota=QuotaWait(seconds=30, initial_seconds=0.1, max_seconds=0.2))
    assert created and len(local_service.service.openai.store.list("job")) == 2


def test_jobs_over_the_running_limit_wait_queued_until_one_finishes(local_service, provider, ledger, train_file,
                                                                   client):
    local_service.service.openai.jobs.max_running_jobs = 1
    local_service.service.openai.jobs.seconds_per_1k_tokens = 0.2  # long enough to be seen running on a loaded machine
    file = upload(provider, ledger, train_file)
    first, _ = create(provider, ledger, spec_for(file.file_id))
    second, _ = create(provider, ledger, spec_for(file.file_id, suffix="second"))
    seen = set()
    while (status := client.fine_tuning.jobs.retrieve(second.id).status) != "succeeded":
        seen.add((client.fine_tuning.jobs.retrieve(first.id).status, status))
        assert status != "failed"
        time.sleep(0.02)
    assert ("running", "queued") in seen and ("running", "running") not in seen
    done = [client.fine_tuning.jobs.retrieve(j.id) for j in (first, second)]
    started = [e.created_at for e in client.fine_tuning.jobs.list_events(second.id) if e.message == "Fine-tuning job started"]
    assert started[0] >= done[0].finished_at


def test_a_wrong_key_is_one_refusal_line_with_the_masked_key(local_service, ledger, train_file):
    provider = provider_for(local_service, key="sk-wrong-key-0000abcd")
    with pytest.raises(ProviderRefused) as info:
        upload(provider, ledger, train_file)
    assert str(info.value) == "the provider rejected the API key (sk-***abcd)"
    assert "wrong-key" not in str(info.value)


def _prepared(tmp_path, **report_overrides):
    from tasks.report import dataset_sha256

    folder = tmp_path / "prepared"
    folder.mkdir(parents=True)
    (folder / "train.jsonl").write_bytes(training_bytes(n=12))
    (folder / "validation.jsonl").write_bytes(training_bytes(n=2, offset=50))
    report = {"dataset_sha256": dataset_sha256(folder / "train.jsonl", folder / "validation.jsonl"), "n_epochs": 3,
              "estimated_cost_usd": 1.0, "max_cost_usd": 2.0, "gate": {"passed": True, "failures": []},
              **report_overrides}
    (folder / "report.json").write_text(json.dumps(report))
    return folder


def test_finetune_refuses_a_gate_failed_or_altered_folder_and_rechecks_the_budget(tmp_path):
    folder = _prepared(tmp_path)
    assert verify_dataset(str(folder), n_epochs=None, max_cost_usd=None)["n_epochs"] == 3
    with pytest.raises(BudgetExceeded, match=r"\$3.33 is over the budget of \$2.00"):
        verify_dataset(str(folder), n_epochs=10, max_cost_usd=None)
    assert verify_dataset(str(folder), n_epochs=5, max_cost_usd=None)  # $1.67 fits
    (folder / "train.jsonl").write_bytes(training_bytes(n=13))
    with pytest.raises(DataError, match="do not match the sha256"):
        verify_dataset(str(folder), n_epochs=None, max_cost_usd=None)
    failed = _prepared(tmp_path / "f", gate={"passed": False, "failures": ["too few examples"]})
    with pytest.raises(DataError, match="gate failed \\(too few examples\\)"):
        verify_dataset(str(failed), n_epochs=None, max_cost_usd=None)
