"""The vertex provider against the local service's Vertex AI and Cloud Storage, through google-genai and
google-cloud-storage: upload once, create once (labels), poll, chat through generate_content; faults; refusals."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest

from ftflow.errors import JobCancelled, ProviderRefused
from ftflow.exactly_once import OncePolicy
from ftflow.providers import get_provider
from ftflow.providers.base import JobSpec
from ftflow.providers.vertex import LABEL
from ftflow.settings import get_settings
from ftflow.store.ledger import Ledger
from tasks.jobs import QuotaWait, create_job_once, poll_job
from tasks.upload import ensure_uploaded
from tests.conftest import training_bytes
from tests.integration.dialects import LOCATION, PROJECT, root
from tests.integration.test_service_faults import set_faults

pytestmark = pytest.mark.service
POLICY = OncePolicy(lookup_deadline_seconds=3, lookup_interval_seconds=0.1, backoff_seconds=0.01, create_attempts=6)
MODEL = "gemini-2.5-flash"


def vertex_env(service, monkeypatch, tmp_path) -> None:
    url = root(service)
    for name, value in {"GOOGLE_OAUTH_ACCESS_TOKEN": service.api_key, "FTFLOW_VERTEX_PROJECT": PROJECT,
                        "FTFLOW_VERTEX_LOCATION": LOCATION, "FTFLOW_VERTEX_BUCKET": "ftflow-tuning",
                        "FTFLOW_VERTEX_BASE_URL": f"{url}/vertex/", "FTFLOW_VERTEX_STORAGE_URL": f"{url}/gcs",
                        "FTFLOW_WORK_DIR": str(tmp_path / "work"), "FTFLOW_POLL_INITIAL_SECONDS": "0.05"}.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def vertex(local_service, tmp_path, monkeypatch):
    vertex_env(local_service, monkeypatch, tmp_path)
    provider = get_provider(get_settings(backend="vertex", model=MODEL, request_timeout_seconds=15.0))
    return provider, Ledger(f"sqlite:///{tmp_path / 'r.sqlite3'}")


def spec_for(file_id: str, sha: str, method: str = "supervised") -> JobSpec:
    return JobSpec(model=MODEL, training_file=file_id, validation_file=None, dataset_sha256=sha, suffix="ftflow",
                   hyperparameters={"n_epochs": 1}, method=method)


def test_lifecycle_uploads_geminis_format_once_and_finds_the_job_by_its_label(vertex, local_service, tmp_path):
    provider, ledger = vertex
    path = tmp_path / "train.jsonl"
    path.write_bytes(training_bytes(n=12))
    file = ensure_uploaded(provider, ledger, path, policy=POLICY)
    assert file.file_id == f"gs://ftflow-tuning/ftflow-{file.sha256}.jsonl"
    assert ensure_uploaded(provider, ledger, path, policy=POLICY).file_id == file.file_id
    stored = provider.file_text(file.file_id).splitlines()
    assert len(stored) == 12 and json.loads(stored[0])["contents"][1]["role"] == "model"  # Gemini's format
    job, created, spec = create_job_once(provider, ledger, spec_for(file.file_id, file.sha256), policy=POLICY)
    again, created_again, _ = create_job_once(provider, ledger, spec_for(file.file_id, file.sha256),
                                              policy=POLICY)
    assert created and not created_again and again.id == job.id
    ledger_free = Ledger(f"sqlite:///{tmp_path / 'other.sqlite3'}")  # no ledger: the label alone finds it
    assert create_job_once(provider, ledger_free, spec_for(file.file_id, file.sha256), policy=POLICY)[0].id \
        == job.id
    assert provider.find_job(spec.key).key == spec.key
    done = poll_job(provider, job.id, initial=0.05, maximum=0.2, deadline=time.time() + 60, on_event=lambda e: None)
    assert done.state == "succeeded" and done.fine_tuned_model.startswith(f"{MODEL}@projects/{PROJECT}/locations/")
    assert done.trained_tokens > 0 and done.hyperparameters == {"n_epochs": 1}
    reply = provider.chat(provider.served_as(done.fine_tuned_model)).ask([{"role": "system", "content": "Antworte knapp."},
                                                      {"role": "user", "content": "Frage 3: Wo ist Bestellung AR-3?"}])
    assert json.loads(reply.text) == {"antwort": "Bestellung AR-3 ist unterwegs"} and reply.prompt_tokens > 0
    assert provider.chat(MODEL).ask([{"role": "user", "content": "Hallo"}]).text  # the base model by its name

    local_service.service.vertex.jobs.seconds_per_1k_tokens = 5.0
    slow = replace(spec_for(file.file_id, file.sha256), hyperparameters={"n_epochs": 2})
    running, _, _ = create_job_once(provider, ledger, slow, policy=POLICY)
    provider.cancel_job(running.id)
    with pytest.raises(JobCancelled):
        poll_job(provider, running.id, initial=0.05, maximum=0.2, deadline=time.time() + 60, on_event=lambda e: None)
    assert provider.get_job(running.id).provider_status == "JOB_STATE_CANCELLED"


def test_faults_leave_one_object_per_content_and_one_job_per_key(vertex, local_service, tmp_path):
    provider, ledger = vertex
    faults = {"rate_limit": 0.2, "server_error": 0.2, "lost_response": 0.3, "retry_after": 0.01}
    set_faults(local_service, {op: faults for op in ("gcs.objects.insert", "vertex.tuning_jobs.create")}, seed=5)
    keys = set()
    for i in range(3):
        path = tmp_path / f"d{i}.jsonl"
        path.write_bytes(training_bytes(n=12, offset=100 * i))
        for _ in range(2):
            file = ensure_uploaded(provider, ledger, path, policy=POLICY)
            _, _, spec = create_job_once(provider, ledger, spec_for(file.file_id, file.sha256), policy=POLICY)
            keys.add(spec.key)
    injected = local_service.service.faults.injected
    set_faults(local_service, {})
    assert sum(injected.values()) > 0, injected
    names = [blob.name for blob in provider.gcs.list_blobs("ftflow-tuning")]
    assert len(names) == len(set(names)) == 3  # one object per content
    jobs = provider.list_jobs("")
    assert len(jobs) == len(keys) == 3 and {job.key for job in jobs} == keys  # one job per key, each labelled
    assert all(provider.tuning.tunings.get(name=job.id).labels == {LABEL: job.key} for job in jobs)


def test_refusals_are_one_line_each(vertex, local_service, tmp_path):
    provider, ledger = vertex
    path = tmp_path / "train.jsonl"
    path.write_bytes(training_bytes(n=12))
    file = ensure_uploaded(provider, ledger, path, policy=POLICY)
    unsupported = JobSpec(model="gemini-1.0-pro", training_file=file.file_id, validation_file=None,
                          dataset_sha256=file.sha256)
    with pytest.raises(ProviderRefused, match="Vertex AI cannot tune this base model.*gemini-1.0-pro"):
        create_job_once(provider, ledger, unsupported, policy=POLICY)
    vertex_backend = local_service.service.vertex
    vertex_backend.config = vertex_backend.config.model_copy(update={"daily_job_limit": 0})
    with pytest.raises(ProviderRefused, match="quota .*not waited out.*429 RESOURCE_EXHAUSTED: Quota exceeded"):
        create_job_once(provider, ledger, spec_for(file.file_id, file.sha256), policy=POLICY,
                        quota=QuotaWait(0))
    vertex_backend.config = vertex_backend.config.model_copy(update={"daily_job_limit": None,
                                                                     "refusal": "Tuning is not enabled."})
    with pytest.raises(ProviderRefused, match="lack of permission.*aiplatform.tuningJobs.create' denied"):
        create_job_once(provider, ledger, spec_for(file.file_id, file.sha256), policy=POLICY)


def test_a_wrong_token_is_one_line_without_the_token(local_service, tmp_path, monkeypatch):
    vertex_env(local_service, monkeypatch, tmp_path)
    monkeypatch.setenv("GOOGLE_OAUTH_ACCESS_TOKEN", "wrong-token-1234")
    provider = get_provider(get_settings(backend="vertex", model=MODEL))
    path = tmp_path / "train.jsonl"
    path.write_bytes(training_bytes(n=12))
    with pytest.raises(ProviderRefused, match="Google rejected the credentials") as refused:
        ensure_uploaded(provider, Ledger(f"sqlite:///{tmp_path / 'r.sqlite3'}"), path, policy=POLICY)
    assert "wrong-token" not in str(refused.value) and "\n" not in str(refused.value)
