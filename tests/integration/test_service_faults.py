"""Each injected fault happens as configured, and the SDK surfaces it as the real API's would."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import training_bytes

pytestmark = pytest.mark.service


def set_faults(service, rules: dict, seed: int = 1) -> dict:
    response = httpx.put(f"{service.base_url.removesuffix('/v1')}/_admin/faults", json={"seed": seed, "rules": rules},
                         headers={"Authorization": f"Bearer {service.api_key}"})
    assert response.status_code == 200, response.text
    return response.json()


def injected(service) -> dict:
    return httpx.get(f"{service.base_url.removesuffix('/v1')}/_admin/faults",
                     headers={"Authorization": f"Bearer {service.api_key}"}).json()["injected"]


def test_rate_limit_is_a_429_with_retry_after(local_service, client):
    set_faults(local_service, {"models.list": {"rate_limit": 1.0, "retry_after": 0.01}})
    with pytest.raises(openai.RateLimitError) as info:
        client.models.list()
    assert info.value.status_code == 429 and info.value.response.headers["retry-after"] == "0.01"
    assert info.value.code == "rate_limit_exceeded"
    client.files.list()  # other operations are untouched


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors(local_service, client, status):
    set_faults(local_service, {"*": {"server_error": 1.0}}, seed=0)
    local_service.service.faults.server_error_status = lambda: status
    with pytest.raises(openai.InternalServerError) as info:
        client.files.list()
    assert info.value.status_code == status


def test_sdk_retries_recover_from_transient_faults(local_service):
    set_faults(local_service, {"files.list": {"rate_limit": 0.5, "server_error": 0.5, "retry_after": 0.01,
                                              "max_faults": 2}})
    retrying = openai.OpenAI(base_url=local_service.base_url, api_key=local_service.api_key, max_retries=2)
    assert retrying.files.list().data == []
    assert sum(injected(local_service).values()) == 2


def test_slow_responses_time_out_but_the_operation_happens(local_service, client):
    set_faults(local_service, {"files.create": {"slow": 1.0, "slow_seconds": 1.0}})
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.3).files.create(file=("t.jsonl", training_bytes()), purpose="fine-tune")
    set_faults(local_service, {})
    for _ in range(50):  # the server finishes the slow request after the client gave up
        if client.files.list().data:
            break
        import time

        time.sleep(0.05)
    assert len(client.files.list().data) == 1


def test_lost_response_carries_out_the_operation(local_service, client):
    file = client.files.create(file=("t.jsonl", training_bytes()), purpose="fine-tune")
    set_faults(local_service, {"fine_tuning.jobs.create": {"lost_response": 1.0, "max_faults": 1}})
    with pytest.raises(openai.APIConnectionError):
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file.id, metadata={"key": "k1"})
    # The job exists although the client never heard of it: what idempotency keys are for.
    assert len(client.fine_tuning.jobs.list(metadata={"key": "k1"}).data) == 1
    assert injected(local_service) == {"fine_tuning.jobs.create:lost_response": 1}


def test_faults_are_seeded_and_repeatable(local_service, client):
    outcomes = []
    for _ in range(2):
        set_faults(local_service, {"models.list": {"rate_limit": 0.5}}, seed=42)
        run = []
        for _ in range(20):
            try:
                client.models.list()
                run.append("ok")
            except openai.RateLimitError:
                run.append("429")
        outcomes.append(run)
    assert outcomes[0] == outcomes[1] and "ok" in outcomes[0] and "429" in outcomes[0]


def test_admin_needs_the_key(local_service):
    response = httpx.get(f"{local_service.base_url.removesuffix('/v1')}/_admin/faults")
    assert response.status_code == 401


def test_fault_plan_from_the_environment(monkeypatch):
    from localai.config import ServiceConfig

    monkeypatch.setenv("FTFLOW_SERVICE_FAULTS", '{"seed": 5, "rules": {"models.list": {"rate_limit": 1.0}}}')
    config = ServiceConfig()
    assert config.faults.seed == 5 and config.faults.rules["models.list"].rate_limit == 1.0
