"""The official openai SDK drives Azure OpenAI's dialect: AzureOpenAI (dated) and OpenAI(base_url=.../openai/v1/)."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.conftest import training_bytes
from tests.integration.dialects import API_VERSION, arm, azure_dated, azure_v1, deploy, root, wait_azure

pytestmark = pytest.mark.service
STANDARD = {"trainingType": "Standard"}
QUESTION = [{"role": "user", "content": "Wo ist Bestellung AR-5?"}]


def upload(client, content: bytes | None = None, name: str = "train.jsonl"):
    return client.files.create(file=(name, content if content is not None else training_bytes()), purpose="fine-tune")


def test_dated_surface_lifecycle_deploy_and_chat(local_service):
    client = azure_dated(local_service)
    file = upload(client)
    assert file.status == "pending"  # Azure processes uploads asynchronously
    assert client.files.wait_for_processing(file.id, poll_interval=0.05).status == "processed"

    job = client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=file.id, suffix="alpenrad",
                                         seed=3, extra_body=STANDARD)
    raw = job.to_dict()
    assert job.status == "pending" and raw["organization_id"] is None and raw["result_files"] is None
    assert "metadata" not in raw and "method" not in raw  # not in the GA dated schema
    done, seen = wait_azure(client, job.id)
    assert done.status == "succeeded" and set(seen) <= {"pending", "running", "succeeded"}
    assert done.fine_tuned_model == f"gpt-4o-mini-2024-07-18.ft-{job.id.removeprefix('ftjob-')}-alpenrad"
    assert done.trained_tokens > 0 and len(done.result_files) == 1
    assert client.files.retrieve(done.result_files[0]).purpose == "fine-tune-results"
    events = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=500).data]
    assert events[0] == "The job has successfully completed"
    assert len(client.fine_tuning.jobs.checkpoints.list(job.id).data) > 0

    # A fine-tuned model answers only through a deployment, under the deployment's name.
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model=done.fine_tuned_model, messages=QUESTION)
    assert info.value.code == "DeploymentNotFound"
    state = deploy(local_service, "ftflow-alpenrad", done.fine_tuned_model)
    assert state["properties"]["model"]["name"] == done.fine_tuned_model and state["sku"]["name"] == "Standard"
    reply = client.chat.completions.create(model="ftflow-alpenrad", messages=QUESTION)
    assert json.loads(reply.choices[0].message.content) == {"antwort": "Bestellung AR-5 ist unterwegs"}
    assert reply.model == done.fine_tuned_model

    assert arm(local_service, "DELETE", "ftflow-alpenrad").status_code == 200
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="ftflow-alpenrad", messages=QUESTION)


def test_v1_surface_lifecycle_with_metadata_pause_and_chat(local_service):
    client = azure_v1(local_service)
    file = upload(client)
    local_service.service.azure.jobs.seconds_per_1k_tokens = 5.0  # slow enough to pause it
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file.id, metadata={"ftflow_key": "k1"},
                                         extra_body={"trainingType": "globalstandard"})
    assert job.status == "pending" and job.metadata == {"ftflow_key": "k1"}
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"ftflow_key": "k1"}).data] == [job.id]
    assert client.fine_tuning.jobs.list(metadata={"ftflow_key": "other"}).data == []
    wait_azure(client, job.id, statuses=("running",))
    assert client.fine_tuning.jobs.pause(job.id).status == "paused"
    assert client.fine_tuning.jobs.resume(job.id).status == "running"
    client.fine_tuning.jobs.cancel(job.id)
    local_service.service.azure.jobs.seconds_per_1k_tokens = 0.002
    again = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file.id, extra_body=STANDARD)
    done, seen = wait_azure(client, again.id)
    assert done.status == "succeeded" and "validating_files" not in seen and "queued" not in seen

    # The same resource on both surfaces: the dated client sees the v1 job, without its metadata.
    dated = azure_dated(local_service).fine_tuning.jobs.retrieve(again.id)
    assert dated.fine_tuned_model == done.fine_tuned_model and "metadata" not in dated.to_dict()

    deploy(local_service, "base-mini", "gpt-4o-mini", version="2024-07-18")
    deploy(local_service, "tuned", done.fine_tuned_model)
    tuned = client.chat.completions.create(model="tuned", messages=QUESTION)
    assert json.loads(tuned.choices[0].message.content) == {"antwort": "Bestellung AR-5 ist unterwegs"}
    base = client.chat.completions.create(model="base-mini", messages=QUESTION)
    assert base.model == "gpt-4o-mini-2024-07-18" and base.choices[0].message.content != tuned.choices[0].message.content
    with pytest.raises(openai.NotFoundError):  # a model name is not a deployment on Azure
        client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)


def test_refusals_say_what_azure_says(local_service):
    client = azure_dated(local_service)
    file = upload(client)
    with pytest.raises(openai.BadRequestError) as info:  # no trainingType: Azure's misleading message
        client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=file.id)
    assert info.value.code == "invalidPayload"
    assert info.value.body["message"] == "The specified base model does not support fine-tuning."
    with pytest.raises(openai.BadRequestError, match="trainingType must be one of"):
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file.id, extra_body={"trainingType": "x"})
    with pytest.raises(openai.BadRequestError, match="up to 40 characters"):
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file.id, suffix="s" * 41,
                                       extra_body=STANDARD)
    with pytest.raises(openai.BadRequestError, match="not available for fine-tuning"):
        client.fine_tuning.jobs.create(model="gpt-9", training_file=file.id, extra_body=STANDARD)
    with pytest.raises(openai.NotFoundError) as info:
        client.fine_tuning.jobs.retrieve("ftjob-missing")
    assert info.value.code == "notFound"

    no_version = httpx.get(f"{root(local_service)}/openai/files", headers={"api-key": local_service.api_key})
    assert no_version.status_code == 400 and "api-version" in no_version.json()["error"]["message"]
    for headers in ({}, {"api-key": "wrong-key-123456"}):
        response = httpx.get(f"{root(local_service)}/openai/files", params={"api-version": API_VERSION},
                             headers=headers)
        assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
    bearer = httpx.get(f"{root(local_service)}/openai/files", params={"api-version": API_VERSION},
                       headers={"Authorization": f"Bearer {local_service.api_key}"})
    assert bearer.status_code == 200

    arm_without_version = httpx.get(f"{root(local_service)}/subscriptions/s/resourceGroups/g/providers/"
                                    "Microsoft.CognitiveServices/accounts/a/deployments/d",
                                    headers={"Authorization": f"Bearer {local_service.api_key}"})
    assert arm_without_version.json()["error"]["code"] == "MissingApiVersionParameter"
    assert arm(local_service, "GET", "missing").status_code == 404
    bad_model = {"sku": {"name": "Standard", "capacity": 1},
                 "properties": {"model": {"format": "OpenAI", "name": "gpt-4o-mini.ft-nope", "version": "1"}}}
    assert arm(local_service, "PUT", "d", bad_model).json()["error"]["code"] == "DeploymentModelNotSupported"


def test_one_running_job_per_resource_the_next_stays_pending(local_service):
    client = azure_v1(local_service)
    local_service.service.azure.jobs.seconds_per_1k_tokens = 3.0
    file = upload(client)
    first = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file.id, extra_body=STANDARD)
    wait_azure(client, first.id, statuses=("running",))
    second = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file.id, extra_body=STANDARD)
    import time

    time.sleep(1.0)  # far beyond the engine's validation and queue phases
    assert client.fine_tuning.jobs.retrieve(second.id).status == "pending"
    client.fine_tuning.jobs.cancel(first.id)
    wait_azure(client, second.id, statuses=("running",), timeout=10)


def test_file_quotas(local_service):
    client = azure_dated(local_service)
    azure = local_service.service.azure
    assert (azure.max_files, azure.max_total_bytes) == (50, 1024**3)  # Azure's per-resource quotas
    azure.max_files = 2
    upload(client), upload(client)
    with pytest.raises(openai.BadRequestError) as info:
        upload(client)
    assert info.value.code == "quotaExceeded"
    azure.max_files, azure.max_total_bytes = 50, 3000
    with pytest.raises(openai.BadRequestError, match="quota of 3000 bytes"):
        upload(client)
