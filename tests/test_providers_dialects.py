"""Each provider implementation against its dialect of the local service, through its official SDK.

Upload once, create once (a second call attaches), poll to the end, deploy (Azure), chat; and
under injected 429/5xx/lost responses: one file per content and one job per key.
"""

from __future__ import annotations

import time

import pytest

from ftflow.errors import ProviderRefused
from ftflow.exactly_once import OncePolicy
from ftflow.providers import get_provider
from ftflow.settings import get_settings
from tasks.jobs import JobRequest, create_job_once, deployment_name, poll_job
from tasks.registry import Registry
from tasks.upload import ensure_uploaded
from tests.conftest import training_bytes
from tests.dialects import root
from tests.test_service_faults import set_faults

pytestmark = pytest.mark.service
POLICY = OncePolicy(lookup_deadline_seconds=3, lookup_interval_seconds=0.1, backoff_seconds=0.01, create_attempts=6)
BACKENDS = {
    "azure-v1": ("azure", "gpt-4o-mini-2024-07-18", {"FTFLOW_AZURE_SURFACE": "v1"}),
    "azure-dated": ("azure", "gpt-4o-mini-2024-07-18", {"FTFLOW_AZURE_SURFACE": "dated"}),
    "together": ("together", "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference", {}),
}


@pytest.fixture(params=list(BACKENDS))
def dialect(request, local_service, tmp_path, monkeypatch):
    backend, model, extra = BACKENDS[request.param]
    key, url = local_service.api_key, root(local_service)
    for name, value in {"AZURE_OPENAI_API_KEY": key, "FTFLOW_AZURE_ENDPOINT": url,
                        "FTFLOW_AZURE_API_VERSION": "2024-10-21", "FTFLOW_AZURE_SUBSCRIPTION_ID": "sub-1",
                        "FTFLOW_AZURE_RESOURCE_GROUP": "rg-1", "FTFLOW_AZURE_ACCOUNT": "acct-1",
                        "FTFLOW_AZURE_MANAGEMENT_URL": url, "AZURE_MANAGEMENT_TOKEN": key,
                        "FTFLOW_AZURE_DEPLOYMENT_SKU": "Standard", "TOGETHER_API_KEY": key,
                        "FTFLOW_TOGETHER_BASE_URL": f"{url}/together", "FTFLOW_POLL_INITIAL_SECONDS": "0.05",
                        **extra}.items():
        monkeypatch.setenv(name, value)
    settings = get_settings(backend=backend, model=model, request_timeout_seconds=15.0)
    return request.param, get_provider(settings), model, Registry(f"sqlite:///{tmp_path / 'r.sqlite3'}")


def request_for(file_id: str, model: str, sha: str) -> JobRequest:
    return JobRequest(model=model, training_file=file_id, validation_file=None, dataset_sha256=sha, suffix="ftflow",
                      hyperparameters={"n_epochs": 1})


def test_lifecycle_through_the_providers_sdk(dialect, tmp_path):
    name, provider, model, registry = dialect
    path = tmp_path / "train.jsonl"
    path.write_bytes(training_bytes(n=12))
    file = ensure_uploaded(provider, registry, path, policy=POLICY)
    assert ensure_uploaded(provider, registry, path, policy=POLICY).file_id == file.file_id
    job, created, request = create_job_once(provider, registry, request_for(file.file_id, model, file.sha256),
                                            policy=POLICY)
    again, created_again, _ = create_job_once(provider, registry, request_for(file.file_id, model, file.sha256),
                                              policy=POLICY)
    assert created and not created_again and again.id == job.id
    assert provider.find_job(request.key).id == job.id  # the key is visible at the provider (suffix tag)
    events = []
    done = poll_job(provider, job.id, initial=0.05, maximum=0.2, deadline=time.time() + 60, on_event=events.append)
    assert done.state == "succeeded" and done.fine_tuned_model and events
    served = provider.deploy_model(done.fine_tuned_model, deployment_name("ftflow", request.key))
    if name.startswith("azure"):
        assert served == deployment_name("ftflow", request.key) != done.fine_tuned_model
    else:
        assert served == done.fine_tuned_model
    reply = provider.chat_client().chat.completions.create(model=served, messages=[{"role": "user", "content": "Hallo"}])
    assert reply.choices[0].message.content


FAULT_OPS = {"azure": ("azure.files.create", "azure.fine_tuning.jobs.create"),
             "together": ("together.files.create", "together.fine_tunes.create")}


def test_faults_leave_one_file_per_content_and_one_job_per_key(dialect, local_service, tmp_path):
    name, provider, model, registry = dialect
    faults = {"rate_limit": 0.2, "server_error": 0.2, "lost_response": 0.3, "retry_after": 0.01}
    set_faults(local_service, {op: faults for op in FAULT_OPS[name.split("-")[0]]}, seed=5)
    keys = set()
    for i in range(3):
        path = tmp_path / f"d{i}.jsonl"
        path.write_bytes(training_bytes(n=12, offset=100 * i))
        for _ in range(2):
            file = ensure_uploaded(provider, registry, path, policy=POLICY)
            _, _, request = create_job_once(provider, registry, request_for(file.file_id, model, file.sha256),
                                            policy=POLICY)
            keys.add(request.key)
    injected = local_service.service.faults.injected
    set_faults(local_service, {})
    assert sum(injected.values()) > 0, injected
    files = provider.client.files.list()
    names = [f.filename for f in (files.data if hasattr(files, "data") else files) if f.filename.startswith("ftflow-")]
    assert len(names) == len(set(names)) == 3  # one file per content
    jobs = provider.list_jobs("")
    assert len(jobs) == len(keys) == 3 and len({job.key for job in jobs}) == 3  # one job per key


def test_known_refusals_are_one_line(dialect, monkeypatch, tmp_path):
    name, provider, model, registry = dialect
    path = tmp_path / "train.jsonl"
    path.write_bytes(training_bytes(n=12))
    file = ensure_uploaded(provider, registry, path, policy=POLICY)
    if name.startswith("azure"):
        monkeypatch.setattr(provider.settings, "azure_training_type", "NoSuchType")
        expected = "training type|base model"
    else:
        model = "meta-llama/Not-A-Fine-Tunable-Model"
        expected = "Together cannot fine-tune this model"
    with pytest.raises(ProviderRefused, match=expected):
        create_job_once(provider, registry, request_for(file.file_id, model, file.sha256), policy=POLICY)
