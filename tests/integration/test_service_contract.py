"""Every response of every endpoint validates against the official OpenAI OpenAPI spec.

The spec is read from tests/data/openai-openapi.yaml (the vendored subset); the response schema of each
call is looked up from the spec's own paths (200 response, or ErrorResponse for errors).
"""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest
from openapi_schema_validator import OAS31Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.conftest import preference_bytes, training_bytes

pytestmark = [pytest.mark.service]


class ContractClient:
    """httpx against the service; each response is validated before it is returned."""

    def __init__(self, service, spec) -> None:
        self.http = httpx.Client(base_url=service.base_url, headers={"Authorization": f"Bearer {service.api_key}"})
        self.spec = spec
        self.registry = Registry().with_resource("urn:openai", Resource.from_contents(spec, default_specification=DRAFT202012))
        self.templates = [(re.compile("^" + re.sub(r"\{[^}]+\}", r"[^/]+", p) + "$"), p) for p in spec["paths"]]
        self.checked: set[tuple[str, str, int]] = set()

    def schema_for(self, method: str, path: str, status: int) -> dict:
        if status >= 400:
            return {"$ref": "urn:openai#/components/schemas/ErrorResponse"}
        # Prefer the most specific template (`/models/{model}` over a longer match with more params).
        candidates = [t for regex, t in self.templates if regex.match(path)]
        template = min(candidates, key=lambda t: t.count("{"))
        content = self.spec["paths"][template][method.lower()]["responses"]["200"]["content"]
        ref = content["application/json"]["schema"]["$ref"]
        return {"$ref": "urn:openai" + ref}

    def call(self, method: str, path: str, *, expect: int = 200, **kwargs) -> dict:
        response = self.http.request(method, path.removeprefix("/"), **kwargs)
        assert response.status_code == expect, response.text
        body = response.json()
        OAS31Validator(self.schema_for(method, path, response.status_code), registry=self.registry).validate(body)
        self.checked.add((method, re.sub(r"(file|ftjob|upload|part)[-_][A-Za-z0-9]+|ft:[^/]+", "{id}", path), expect))
        return body


def test_every_endpoint_honours_the_spec(local_service, spec):
    api = ContractClient(local_service, spec)
    files = {"file": ("train.jsonl", training_bytes(), "application/jsonl")}
    file = api.call("POST", "/files", files=files, data={"purpose": "fine-tune"})
    api.call("POST", "/files", files={"file": ("few.jsonl", training_bytes(3))}, data={"purpose": "fine-tune"})
    api.call("POST", "/files", files={"file": ("t.csv", b"a,b")}, data={"purpose": "fine-tune"}, expect=400)
    api.call("GET", "/files", params={"purpose": "fine-tune", "limit": 1, "order": "asc"})
    api.call("GET", f"/files/{file['id']}")
    api.call("GET", "/files/file-missing", expect=404)

    content = training_bytes(20)
    upload = api.call("POST", "/uploads", json={"filename": "big.jsonl", "purpose": "fine-tune", "bytes": len(content),
                                                "mime_type": "text/jsonl"})
    parts = [api.call("POST", f"/uploads/{upload['id']}/parts", files={"data": ("p", content[i : i + 500])})["id"]
             for i in range(0, len(content), 500)]
    api.call("POST", f"/uploads/{upload['id']}/complete", json={"part_ids": parts[:-1]}, expect=400)
    done = api.call("POST", f"/uploads/{upload['id']}/complete", json={"part_ids": parts})
    assert done["file"]["status"] == "processed"
    other = api.call("POST", "/uploads", json={"filename": "x.jsonl", "purpose": "fine-tune", "bytes": 5,
                                               "mime_type": "text/jsonl"})
    api.call("POST", f"/uploads/{other['id']}/cancel")

    job = api.call("POST", "/fine_tuning/jobs", json={
        "model": "gpt-4o-mini-2024-07-18", "training_file": file["id"], "validation_file": done["file"]["id"],
        "suffix": "contract", "metadata": {"k": "v"},
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}}})
    api.call("POST", "/fine_tuning/jobs", json={"model": "gpt-9", "training_file": file["id"]}, expect=400)
    api.call("GET", "/fine_tuning/jobs", params={"metadata[k]": "v", "limit": 5})
    deadline = time.monotonic() + 30
    while (job := api.call("GET", f"/fine_tuning/jobs/{job['id']}"))["status"] != "succeeded":
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    api.call("GET", f"/fine_tuning/jobs/{job['id']}/events", params={"limit": 50})
    checkpoints = api.call("GET", f"/fine_tuning/jobs/{job['id']}/checkpoints")
    assert len(checkpoints["data"]) == 2
    api.call("POST", f"/fine_tuning/jobs/{job['id']}/cancel", expect=400)
    api.call("GET", f"/files/{job['result_files'][0]}")

    local_service.service.openai.jobs.seconds_per_1k_tokens = 5.0
    api.call("POST", "/fine_tuning/jobs", json={"model": "gpt-4o-mini", "training_file": file["id"],
                                                "method": {"type": "dpo"}}, expect=400)
    pairs = api.call("POST", "/files", files={"file": ("pairs.jsonl", preference_bytes())}, data={"purpose": "fine-tune"})
    slow = api.call("POST", "/fine_tuning/jobs", json={"model": "gpt-4.1-mini", "training_file": pairs["id"],
                                                       "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}}})
    while api.call("GET", f"/fine_tuning/jobs/{slow['id']}")["status"] != "running":
        time.sleep(0.05)
    assert api.call("POST", f"/fine_tuning/jobs/{slow['id']}/pause")["status"] == "paused"
    api.call("POST", f"/fine_tuning/jobs/{slow['id']}/resume")
    api.call("POST", f"/fine_tuning/jobs/{slow['id']}/cancel")

    model = job["fine_tuned_model"]
    api.call("GET", "/models")
    api.call("GET", f"/models/{model}")
    api.call("GET", "/models/gpt-9", expect=404)
    chat = api.call("POST", "/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "Frage 3"}]})
    assert chat["usage"]["total_tokens"] == chat["usage"]["prompt_tokens"] + chat["usage"]["completion_tokens"]
    api.call("POST", "/chat/completions", json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})
    api.call("POST", "/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "x"}]}, expect=404)
    api.call("DELETE", f"/models/{model}")
    api.call("DELETE", f"/files/{file['id']}")
    api.call("GET", "/v1/nothing-here", expect=404)
    unauthenticated = httpx.get(local_service.base_url + "/models")
    assert unauthenticated.status_code == 401
    OAS31Validator(api.schema_for("GET", "/models", 401), registry=api.registry).validate(unauthenticated.json())

    covered = {(m, p) for m, p, _ in api.checked}
    assert len(covered) >= 20, sorted(covered)


def test_file_content_is_the_uploaded_bytes(local_service, client):
    content = training_bytes()
    file = client.files.create(file=("t.jsonl", content), purpose="fine-tune")
    raw = httpx.get(f"{local_service.base_url}/files/{file.id}/content",
                    headers={"Authorization": f"Bearer {local_service.api_key}"})
    assert raw.status_code == 200 and raw.content == content
    assert json.loads(raw.content.splitlines()[0])["messages"][0]["role"] == "user"


def test_moderations_honour_the_spec_and_are_deterministic(local_service, spec):
    api = ContractClient(local_service, spec)
    one = api.call("POST", "/moderations", json={"input": "Ich will mich umbringen."})
    [result] = one["results"]
    assert one["model"] == "omni-moderation-latest" and one["id"].startswith("modr-")
    assert result["flagged"] and {c for c, on in result["categories"].items() if on} == {"self-harm", "self-harm/intent"}
    many = api.call("POST", "/moderations", json={"model": "omni-moderation-2024-09-26", "input": [
        "Wo ist meine Bestellung AR-1?", "I will kill you.", "Der Akku hat ein Messer-Symbol."]})
    assert [r["flagged"] for r in many["results"]] == [False, True, False]
    assert many["results"][1]["categories"]["violence"] and many["results"][1]["category_scores"]["violence"] == 0.6
    parts = api.call("POST", "/moderations", json={"input": [{"type": "text", "text": "Ich will mich umbringen."}]})
    assert parts["results"] == one["results"]  # the same text scores the same, in any request shape
    api.call("POST", "/moderations", json={"input": "x", "model": "gpt-9"}, expect=400)
    api.call("POST", "/moderations", json={"model": "omni-moderation-latest"}, expect=400)
    assert local_service.service.openai.moderations.requests == 3 and local_service.service.openai.moderations.inputs == 5
