"""Clients of each dialect of the local service, as a provider's official SDK would be set up."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import openai
import together

from tests.conftest import training_bytes

API_VERSION = "2024-10-21"
ACCOUNT = "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.CognitiveServices/accounts/acct-1"


def root(service) -> str:
    """http://127.0.0.1:<port>: what Azure calls the endpoint."""
    return service.base_url.removesuffix("/v1")


def azure_dated(service, max_retries: int = 0) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=root(service), api_key=service.api_key, api_version=API_VERSION, max_retries=max_retries
    )


def azure_v1(service, max_retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{root(service)}/openai/v1/", api_key=service.api_key, max_retries=max_retries)


def together_client(service, max_retries: int = 0) -> together.Together:
    return together.Together(base_url=f"{root(service)}/together", api_key=service.api_key, max_retries=max_retries)


def arm(service, method: str, name: str, body: dict | None = None) -> httpx.Response:
    return httpx.request(
        method,
        f"{root(service)}{ACCOUNT}/deployments/{name}",
        params={"api-version": "2024-10-01"},
        headers={"Authorization": f"Bearer {service.api_key}"},
        json=body,
    )


def deploy(service, name: str, model: str, version: str = "1") -> dict:
    """PUT the deployment, then wait until ARM says Succeeded."""
    body = {"sku": {"name": "Standard", "capacity": 1}, "properties": {"model": {"format": "OpenAI", "name": model,
                                                                                "version": version}}}
    response = arm(service, "PUT", name, body)
    assert response.status_code in (200, 201), response.text
    for _ in range(100):
        state = arm(service, "GET", name).json()
        if state["properties"]["provisioningState"] == "Succeeded":
            return state
        time.sleep(0.05)
    raise AssertionError(f"deployment {name} never succeeded: {state}")


def jsonl_file(tmp_path: Path, content: bytes | None = None, name: str = "train.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(content if content is not None else training_bytes())
    return path


AZURE_DONE = ("succeeded", "failed", "cancelled")
TOGETHER_DONE = ("completed", "error", "cancelled")


def wait_azure(client, job_id: str, statuses=AZURE_DONE, timeout: float = 30.0):
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if not seen or seen[-1] != job.status:
            seen.append(job.status)
        if job.status in statuses:
            return job, seen
        assert job.status not in AZURE_DONE, f"job {job_id} ended {job.status}, never {statuses}"
        time.sleep(0.03)
    raise AssertionError(f"job {job_id} still {seen[-1]} after {timeout}s")


def wait_together(client, job_id: str, statuses=TOGETHER_DONE, timeout: float = 30.0):
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.retrieve(job_id)
        if not seen or seen[-1] != job.status:
            seen.append(job.status)
        if job.status in statuses:
            return job, seen
        assert job.status not in TOGETHER_DONE, f"job {job_id} ended {job.status}, never {statuses}"
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} still {seen[-1]} after {timeout}s")


PROJECT, LOCATION = "ftflow-test", "us-central1"
VERTEX_DONE = ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED")


def vertex_client(service, key: str | None = None):
    """`google-genai` on Vertex AI at the service, the key as an OAuth token (as ADC would give one)."""
    import google.oauth2.credentials
    from google import genai
    from google.genai import types

    return genai.Client(vertexai=True, project=PROJECT, location=LOCATION,
                        credentials=google.oauth2.credentials.Credentials(token=key or service.api_key),
                        http_options=types.HttpOptions(base_url=f"{root(service)}/vertex/"))


def storage_client(service, monkeypatch, key: str | None = None):
    """`google-cloud-storage` at the service (STORAGE_EMULATOR_HOST), the key as an OAuth token."""
    import google.oauth2.credentials
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"{root(service)}/gcs")
    return storage.Client(project=PROJECT, credentials=google.oauth2.credentials.Credentials(token=key or service.api_key))


def wait_vertex(client, name: str, states=VERTEX_DONE, timeout: float = 30.0):
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.tunings.get(name=name)
        state = job.state.value
        if not seen or seen[-1] != state:
            seen.append(state)
        if state in states:
            return job, seen
        assert state not in VERTEX_DONE, f"job {name} ended {state}, never {states}"
        time.sleep(0.03)
    raise AssertionError(f"job {name} still {seen[-1]} after {timeout}s")
def fireworks_client(service, max_retries: int = 0, api_key: str | None = None):
    """The `fireworks-ai` SDK against the local service's Fireworks dialect (account `ftflow`)."""
    from fireworks import Fireworks

    return Fireworks(base_url=f"{root(service)}/fireworks", api_key=api_key or service.api_key, account_id="ftflow",
                     max_retries=max_retries)
