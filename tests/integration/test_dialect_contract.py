"""Every Azure and Together response of the emulator validates against the provider's published reference.

- Azure: tests/data/azure/azureopenai-2024-10-21.json, the files and fine-tuning parts of the
  GA authoring spec (Swagger 2.0): success status per operation, response definitions,
  ErrorResponse with the ErrorCode enum for every error. Swagger 2.0 cannot say "nullable";
  Azure sends null for absent optional values (litellm#24687), so optional properties may
  be null here and required ones may not.
- Together: tests/data/together/together-3.1.1-types.json, JSON Schemas of the `together`
  SDK's response types (status enums, required fields, wire names).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import httpx
import pytest
from jsonschema import Draft7Validator, Draft202012Validator

from tests.conftest import training_bytes
from tests.integration.dialects import API_VERSION, root
from tests.integration.test_service_faults import set_faults

pytestmark = pytest.mark.service
DATA = Path(__file__).parents[1] / "data"
AZURE = json.loads((DATA / "azure" / "azureopenai-2024-10-21.json").read_text())
TOGETHER = json.loads((DATA / "together" / "together-3.1.1-types.json").read_text())


def nullable_optionals(schema):
    """Swagger 2.0 -> JSON Schema as Azure serialises it: optional properties may be null."""
    if isinstance(schema, list):
        return [nullable_optionals(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {k: nullable_optionals(v) for k, v in schema.items()}
    if "properties" in converted:
        required = set(converted.get("required", []))
        converted["properties"] = {
            name: prop if name in required else {"anyOf": [prop, {"type": "null"}]}
            for name, prop in converted["properties"].items()
        }
    return converted


class Checked:
    """Calls one dialect over HTTP and validates each answer against the reference for its operation."""

    def __init__(self, http: httpx.Client, operations: dict, validator) -> None:
        self.http = http
        self.templates = [(re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", op.split(" ", 1)[1]) + "$"), op)
                          for op in operations]
        self.operations = operations
        self.validator = validator
        self.seen: set[str] = set()

    def call(self, method: str, path: str, *, expect: int | None = None, **kwargs) -> httpx.Response:
        response = self.http.request(method, path, **kwargs)
        bare = path.split("?")[0]
        matches = [op for regex, op in self.templates if op.startswith(method + " ") and regex.match(bare)]
        assert matches, f"{method} {path} is not in the reference"
        operation = min(matches, key=lambda op: op.count("{"))
        status, schema = self.validator(operation, response)
        assert response.status_code == (expect or status), response.text
        if schema is not None:
            schema.validate(response.json())
        if response.status_code < 400:
            self.seen.add(operation)
        return response


def azure_schema(name: str) -> Draft7Validator:
    return Draft7Validator({"$ref": f"#/definitions/{name}", "definitions": nullable_optionals(AZURE["definitions"])})


def azure_expectation(operation: str, response: httpx.Response):
    status, name = AZURE["responses"][operation]
    if response.status_code >= 400:
        return response.status_code, azure_schema("ErrorResponse")
    return status, azure_schema(name) if name else None


def test_azure_dated_surface_matches_the_2024_10_21_spec(local_service):
    headers = {"api-key": local_service.api_key}
    http = httpx.Client(base_url=f"{root(local_service)}/openai", headers=headers, params={"api-version": API_VERSION})
    api = Checked(http, AZURE["responses"], azure_expectation)
    file = api.call("POST", "/files", files={"file": ("t.jsonl", training_bytes())}, data={"purpose": "fine-tune"})
    assert file.json()["status"] == "pending"
    api.call("POST", "/files", files={"file": ("t.csv", b"a,b")}, data={"purpose": "fine-tune"}, expect=400)
    file_id = file.json()["id"]
    api.call("GET", "/files")
    time.sleep(0.15)
    assert api.call("GET", f"/files/{file_id}").json()["status"] == "processed"
    assert api.call("GET", f"/files/{file_id}/content").content == training_bytes()
    api.call("GET", "/files/file-missing", expect=404)

    body = {"model": "gpt-4o-mini-2024-07-18", "training_file": file_id, "suffix": "contract", "seed": 1}
    api.call("POST", "/fine_tuning/jobs", json=body, expect=400)  # no trainingType
    job = api.call("POST", "/fine_tuning/jobs", json=body | {"trainingType": "Standard"}).json()
    statuses = set()
    for _ in range(600):
        current = api.call("GET", f"/fine_tuning/jobs/{job['id']}").json()
        statuses.add(current["status"])
        if current["status"] == "succeeded":
            break
        time.sleep(0.03)
    assert statuses >= {"pending", "succeeded"}
    api.call("GET", "/fine_tuning/jobs", params={"api-version": API_VERSION, "limit": 5})
    api.call("GET", f"/fine_tuning/jobs/{job['id']}/events")
    api.call("GET", f"/fine_tuning/jobs/{job['id']}/checkpoints")
    api.call("POST", f"/fine_tuning/jobs/{job['id']}/cancel", expect=400)  # already succeeded
    other = api.call("POST", "/fine_tuning/jobs", json=body | {"trainingType": "Developer"}).json()
    assert api.call("POST", f"/fine_tuning/jobs/{other['id']}/cancel").json()["status"] == "cancelled"
    api.call("GET", "/fine_tuning/jobs/ftjob-missing", expect=404)

    set_faults(local_service, {"azure.files.list": {"rate_limit": 1.0}, "azure.fine_tuning.jobs.list": {
        "server_error": 1.0}})
    api.call("GET", "/files", expect=429)
    assert api.call("GET", "/fine_tuning/jobs").status_code in (500, 502, 503)
    set_faults(local_service, {})
    http.headers["api-key"] = "wrong-key-123456"
    api.call("GET", "/files", expect=401)
    http.headers["api-key"] = local_service.api_key
    api.call("DELETE", f"/files/{file_id}")
    assert api.seen == set(AZURE["responses"])  # every operation of the reference was checked


def together_expectation(operation: str, response: httpx.Response):
    if response.status_code >= 400:
        error = {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["message"], "properties": {"message": {"type": "string"}}}}}
        return response.status_code, Draft202012Validator(error)
    return 200, Draft202012Validator(TOGETHER["schemas"][TOGETHER["operations"][operation]])


def test_together_matches_the_sdk_types(local_service):
    http = httpx.Client(base_url=f"{root(local_service)}/together",
                        headers={"Authorization": f"Bearer {local_service.api_key}"})
    api = Checked(http, TOGETHER["operations"], together_expectation)
    content = training_bytes()
    announce = http.post("/v1/files", data={"purpose": "fine-tune", "file_name": "t.jsonl", "file_type": "jsonl",
                                            "checksum": hashlib.sha256(content).hexdigest()})
    assert announce.status_code == 302 and announce.headers["X-Together-File-Id"]
    file_id = announce.headers["X-Together-File-Id"]
    assert httpx.put(announce.headers["Location"] + "0", content=content).status_code == 403  # signature checked
    assert httpx.put(announce.headers["Location"], content=content).status_code == 200
    api.call("POST", f"/v1/files/{file_id}/preprocess")
    api.call("GET", "/v1/files")
    api.call("GET", f"/v1/files/{file_id}")
    llama = "meta-llama/Llama-3.2-3B-Instruct"
    api.call("GET", "/v1/fine-tunes/models/limits", params={"model_name": llama})
    api.call("GET", "/v1/fine-tunes/models/limits", params={"model_name": "gpt-4o-mini"}, expect=400)
    api.call("POST", "/v1/fine-tunes/estimate-price", json={"training_file": file_id, "model": llama, "n_epochs": 1})
    body = {"training_file": file_id, "model": llama, "n_epochs": 1, "suffix": "contract",
            "training_method": {"method": "sft", "train_on_inputs": "auto"}}
    job = api.call("POST", "/v1/fine-tunes", json=body).json()
    statuses = set()
    statuses.add(job["status"])  # `pending` may last less than one poll
    for _ in range(600):
        current = api.call("GET", f"/v1/fine-tunes/{job['id']}").json()
        statuses.add(current["status"])
        if current["status"] == "completed":
            break
        time.sleep(0.02)
    assert statuses >= {"pending", "compressing", "uploading", "completed"}
    api.call("GET", "/v1/fine-tunes")
    api.call("GET", f"/v1/fine-tunes/{job['id']}/events")
    other = api.call("POST", "/v1/fine-tunes", json=body).json()
    assert api.call("POST", f"/v1/fine-tunes/{other['id']}/cancel").json()["status"] == "cancel_requested"
    chat = {"model": current["model_output_name"], "messages": [{"role": "user", "content": "Frage 3"}]}
    api.call("POST", "/v1/chat/completions", json=chat)
    api.call("POST", "/v1/chat/completions", json=chat | {"model": "nobody/nothing"}, expect=404)
    set_faults(local_service, {"together.files.list": {"rate_limit": 1.0}})
    api.call("GET", "/v1/files", expect=429)
    set_faults(local_service, {})
    api.call("DELETE", f"/v1/files/{file_id}")
    assert api.seen == set(TOGETHER["operations"])
