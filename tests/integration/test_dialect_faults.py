"""Fault injection works in every dialect: each provider's SDK sees 429s, 5xx and lost responses as it would there."""

from __future__ import annotations

import openai
import pytest
import together

from tests.conftest import training_bytes
from tests.integration.dialects import arm, azure_dated, azure_v1, jsonl_file, together_client
from tests.integration.test_service_faults import injected, set_faults

pytestmark = pytest.mark.service
STANDARD = {"trainingType": "Standard"}
DEPLOYMENT = {"sku": {"name": "Standard", "capacity": 1},
              "properties": {"model": {"format": "OpenAI", "name": "gpt-4o-mini", "version": "2024-07-18"}}}


def test_azure_rate_limits_server_errors_and_retries(local_service):
    client = azure_dated(local_service)
    set_faults(local_service, {"azure.files.list": {"rate_limit": 1.0, "retry_after": 0.01}})
    with pytest.raises(openai.RateLimitError) as info:
        client.files.list()
    assert info.value.code == "tooManyRequests" and info.value.response.headers["retry-after"] == "0.01"
    with pytest.raises(openai.RateLimitError):  # the same operation on the v1 surface
        azure_v1(local_service).files.list()
    client.fine_tuning.jobs.list()  # other operations are untouched

    set_faults(local_service, {"azure.fine_tuning.jobs.list": {"server_error": 1.0}})
    with pytest.raises(openai.InternalServerError) as info:
        client.fine_tuning.jobs.list()
    assert info.value.status_code in (500, 502, 503) and info.value.code in ("internalFailure", "serviceUnavailable")

    set_faults(local_service, {"azure.deployments.create_or_update": {"server_error": 1.0, "max_faults": 1}})
    assert arm(local_service, "PUT", "d1", DEPLOYMENT).status_code in (500, 502, 503)
    assert arm(local_service, "PUT", "d1", DEPLOYMENT).status_code == 201

    set_faults(local_service, {"*": {"rate_limit": 0.5, "server_error": 0.5, "retry_after": 0.01, "max_faults": 2}})
    retrying = azure_dated(local_service, max_retries=2)
    assert retrying.files.list().data == []
    assert sum(injected(local_service).values()) == 2


def test_azure_lost_responses_are_carried_out(local_service):
    client = azure_v1(local_service)
    set_faults(local_service, {"azure.files.create": {"lost_response": 1.0, "max_faults": 1}})
    with pytest.raises(openai.APIConnectionError):
        client.files.create(file=("t.jsonl", training_bytes()), purpose="fine-tune")
    files = client.files.list().data
    assert len(files) == 1  # uploaded although the client never heard of it

    set_faults(local_service, {"azure.fine_tuning.jobs.create": {"lost_response": 1.0, "max_faults": 1}})
    with pytest.raises(openai.APIConnectionError):
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=files[0].id, metadata={"key": "k1"},
                                       extra_body=STANDARD)
    assert len(client.fine_tuning.jobs.list(metadata={"key": "k1"}).data) == 1
    assert injected(local_service) == {"azure.fine_tuning.jobs.create:lost_response": 1}


def test_together_faults_and_one_file_per_content(local_service, tmp_path):
    client = together_client(local_service)
    path = jsonl_file(tmp_path)
    set_faults(local_service, {"together.files.preprocess": {"lost_response": 1.0, "max_faults": 1}})
    with pytest.raises(together.APIConnectionError):
        client.files.upload(path, purpose="fine-tune")
    file = client.files.upload(path, purpose="fine-tune")  # the bytes are there: Together answers with that file
    assert [f.id for f in client.files.list().data] == [file.id]

    set_faults(local_service, {"together.fine_tunes.create": {"lost_response": 1.0, "max_faults": 1}})
    with pytest.raises(together.APIConnectionError):
        client.fine_tuning.create(training_file=file.id, model="meta-llama/Llama-3.2-3B-Instruct", suffix="k1")
    assert [j.suffix for j in client.fine_tuning.list().data] == ["k1"]

    set_faults(local_service, {"together.fine_tunes.list": {"rate_limit": 1.0, "retry_after": 0.01}})
    with pytest.raises(together.RateLimitError) as info:
        client.fine_tuning.list()
    assert info.value.response.headers["retry-after"] == "0.01"
    set_faults(local_service, {"together.files.list": {"server_error": 1.0}})
    with pytest.raises(together.InternalServerError):
        client.files.list()
    set_faults(local_service, {"together.files.list": {"server_error": 1.0, "max_faults": 2}})
    assert len(together_client(local_service, max_retries=2).files.list().data) == 1
