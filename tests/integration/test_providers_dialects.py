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
from ftflow.providers.base import JobSpec
from ftflow.settings import get_settings
from ftflow.store.ledger import Ledger
from tasks.jobs import create_job_once, deployment_name, poll_job
from tasks.upload import ensure_uploaded
from tests.conftest import training_bytes
from tests.integration.dialects import root
from tests.integration.test_service_faults import set_faults

pytestmark = pytest.mark.service
POLICY = OncePolicy(lookup_deadline_seconds=0.5, lookup_interval_seconds=0.1, backoff_seconds=0.01, create_attempts=6)
BACKENDS = {
    "azure-v1": ("azure", "gpt-4o-mini-2024-07-18", {"FTFLOW_AZURE_SURFACE": "v1"}),
    "azure-dated": ("azure", "gpt-4o-mini-2024-07-18", {"FTFLOW_AZURE_SURFACE": "dated"}),
    "together": ("together", "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference", {}),
    "bedrock": ("bedrock", "amazon.nova-micro-v1:0:128k", {}),
    "fireworks": ("fireworks", "accounts/fireworks/models/llama-v3p1-8b-instruct", {}),
}
NO_EVENTS = ("bedrock", "fireworks")  # their jobs keep no event list


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
                        "AWS_ACCESS_KEY_ID": "AKIDFTFLOW", "AWS_SECRET_ACCESS_KEY": key,
                        "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
                        "FTFLOW_BEDROCK_ENDPOINT_URL": url, "FTFLOW_BEDROCK_BUCKET": "ftflow-data",
                        "FTFLOW_BEDROCK_ROLE_ARN": "arn:aws:iam::000000000000:role/ftflow", "FIREWORKS_API_KEY": key,
                        "FTFLOW_FIREWORKS_BASE_URL": f"{url}/fireworks", "FTFLOW_FIREWORKS_ACCOUNT": "acme",
                        **extra}.items():
        monkeypatch.setenv(name, value)
    if backend == "bedrock":
        from tests.integration.test_dialect_bedrock import aws

        aws(local_service, "s3").create_bucket(Bucket="ftflow-data")
    settings = get_settings(backend=backend, model=model, request_timeout_seconds=15.0)
    return request.param, get_provider(settings), model, Ledger(f"sqlite:///{tmp_path / 'r.sqlite3'}")


def spec_for(file_id: str, model: str, sha: str) -> JobSpec:
    return JobSpec(model=model, training_file=file_id, validation_file=None, dataset_sha256=sha, suffix="ftflow",
                   hyperparameters={"n_epochs": 1})


def test_lifecycle_through_the_providers_sdk(dialect, tmp_path):
    name, provider, model, ledger = dialect
    path = tmp_path / "train.jsonl"
    path.write_bytes(training_bytes(n=12))
    file = ensure_uploaded(provider, ledger, path, policy=POLICY)
    assert ensure_uploaded(provider, ledger, path, policy=POLICY).file_id == file.file_id
    job, created, spec = create_job_once(provider, ledger, spec_for(file.file_id, model, file.sha256),
                                            policy=POLICY)
    again, created_again, _ = create_job_once(provider, ledger, spec_for(file.file_id, model, file.sha256),
                                              policy=POLICY)
    assert created and not created_again and again.id == job.id
    assert provider.find_job(spec.key).id == job.id  # the key is visible at the provider (suffix tag)
    events = []
    done = poll_job(provider, job.id, initial=0.05, maximum=0.2, deadline=time.time() + 60, on_event=events.append)
    assert done.state == "succeeded" and done.fine_tuned_model and (events or name in NO_EVENTS)
    served = provider.deploy_model(done.fine_tuned_model, deployment_name("ftflow", spec.key))
    if name.startswith("azure"):
        assert served == deployment_name("ftflow", spec.key) != done.fine_tuned_model
    elif name == "bedrock":  # an on-demand custom model deployment, answering converse under its ARN
        assert ":custom-model-deployment/" in served
    else:
        assert served == done.fine_tuned_model
    reply = provider.chat(served).ask([{"role": "user", "content": "Hallo"}])  # the neutral interface
    assert reply.text and reply.prompt_tokens > 0


FAULT_OPS = {"azure": ("azure.files.create", "azure.fine_tuning.jobs.create"),
             "together": ("together.files.create", "together.fine_tunes.create"),
             "bedrock": ("s3.put_object", "bedrock.create_model_customization_job"),
             "fireworks": ("fireworks.datasets.upload", "fireworks.jobs.create")}


def remote_files(name: str, provider) -> list[str]:
    """The names of ftflow's files at the provider (S3 objects, Fireworks datasets, files)."""
    if name == "bedrock":
        listed = provider.s3.list_objects_v2(Bucket="ftflow-data", Prefix="ftflow/").get("Contents", [])
        return [o["Key"].rsplit("/", 1)[-1] for o in listed]
    if name == "fireworks":
        return [d.name.rsplit("/", 1)[-1] for d in provider.client.datasets.list().datasets]
    files = provider.client.files.list()
    return [f.filename for f in (files.data if hasattr(files, "data") else files) if f.filename.startswith("ftflow-")]


def remote_jobs(name: str, provider) -> list:
    if name == "fireworks":
        return [provider._job(j) for j in provider.client.supervised_fine_tuning_jobs.list().supervised_fine_tuning_jobs]
    if name == "bedrock":  # nameContains must not be empty; every job name here starts with the suffix
        return provider.list_jobs("ftflow")
    return provider.list_jobs("")


def test_faults_leave_one_file_per_content_and_one_job_per_key(dialect, local_service, tmp_path):
    name, provider, model, ledger = dialect
    faults = {"rate_limit": 0.2, "server_error": 0.2, "lost_response": 0.3, "retry_after": 0.01}
    set_faults(local_service, {op: faults for op in FAULT_OPS[name.split("-")[0]]}, seed=5)
    keys = set()
    for i in range(3):
        path = tmp_path / f"d{i}.jsonl"
        path.write_bytes(training_bytes(n=12, offset=100 * i))
        for _ in range(2):
            file = ensure_uploaded(provider, ledger, path, policy=POLICY)
            _, _, spec = create_job_once(provider, ledger, spec_for(file.file_id, model, file.sha256),
                                            policy=POLICY)
            keys.add(spec.key)
    injected = local_service.service.faults.injected
    set_faults(local_service, {})
    assert sum(injected.values()) > 0, injected
    names = remote_files(name, provider)
    assert len(names) == len(set(names)) == 3  # one file per content
    jobs = remote_jobs(name, provider)
    assert len(jobs) == len(keys) == 3 and len({job.key for job in jobs}) == 3  # one job per key


def test_known_refusals_are_one_line(dialect, monkeypatch, tmp_path):
    name, provider, model, ledger = dialect
    path = tmp_path / "train.jsonl"
    path.write_bytes(training_bytes(n=12))
    file = ensure_uploaded(provider, ledger, path, policy=POLICY)
    if name.startswith("azure"):
        monkeypatch.setattr(provider.settings, "azure_training_type", "NoSuchType")
        expected = "training type|base model"
    else:
        model = {"bedrock": "amazon.nova-nano-v9:0", "fireworks": "accounts/fireworks/models/not-tunable"}.get(
            name, "meta-llama/Not-A-Fine-Tunable-Model")
        expected = f"{name.capitalize()} cannot (fine-tune|customize) this model"
    with pytest.raises(ProviderRefused, match=expected):
        create_job_once(provider, ledger, spec_for(file.file_id, model, file.sha256), policy=POLICY)
