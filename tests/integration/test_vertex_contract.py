"""Contract: what the Vertex and Cloud Storage dialects answer has the shapes of the references and of
`google-genai`'s types, which forbid fields they do not know."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from google.genai import types

from ftflow.formats.gemini import render_jsonl
from tests.conftest import training_bytes
from tests.integration.dialects import LOCATION, PROJECT, root

pytestmark = pytest.mark.service
DATA = Path(__file__).parents[1] / "data" / "vertex"


def reference(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def test_the_references_parse_as_google_genai_types():
    assert types.TuningJob.model_validate(reference("tuning_job.json")).tuned_model.endpoint
    assert types.GenerateContentResponse.model_validate(reference("generate_content_response.json")).text


def test_every_answer_parses_as_the_sdks_types_and_keeps_to_the_references(local_service):
    url, headers = root(local_service), {"Authorization": f"Bearer {local_service.api_key}"}
    http = httpx.Client(base_url=url, headers=headers)
    assert http.post("/gcs/storage/v1/b", params={"project": PROJECT}, json={"name": "ftflow-data"}).status_code == 200
    uploaded = http.post("/gcs/upload/storage/v1/b/ftflow-data/o", params={"uploadType": "media", "name": "t.jsonl"},
                         content=render_jsonl(training_bytes())).json()
    assert set(uploaded) <= set(reference("gcs_object.json")) | {"metadata"}
    assert set(reference("gcs_object.json")) - {"metadata"} <= set(uploaded)

    jobs = f"/vertex/v1beta1/projects/{PROJECT}/locations/{LOCATION}/tuningJobs"
    body = {"baseModel": "gemini-2.5-flash", "labels": {"ftflow-idempotency-key": "k1"},
            "supervisedTuningSpec": {"trainingDatasetUri": "gs://ftflow-data/t.jsonl",
                                     "hyperParameters": {"epochCount": 2}}}
    created = http.post(jobs, json=body).json()
    seen = [types.TuningJob.model_validate(created)]
    while seen[-1].state != types.JobState.JOB_STATE_SUCCEEDED:
        seen.append(types.TuningJob.model_validate(http.get(f"/vertex/v1beta1/{created['name']}").json()))
    done = http.get(f"/vertex/v1beta1/{created['name']}").json()
    assert set(done) <= set(reference("tuning_job.json")) | {"tuningJobState", "description"}
    assert done["tuningDataStats"]["supervisedTuningDataStats"].keys() == \
        reference("tuning_job.json")["tuningDataStats"]["supervisedTuningDataStats"].keys()
    assert types.ListTuningJobsResponse.model_validate(http.get(jobs).json()).tuning_jobs[0].name == created["name"]

    answer = http.post(f"/vertex/v1beta1/{done['tunedModel']['endpoint']}:generateContent",
                       json={"contents": [{"role": "user", "parts": [{"text": "Wo ist Bestellung AR-5?"}]}]}).json()
    assert types.GenerateContentResponse.model_validate(answer).text
    assert set(answer) <= set(reference("generate_content_response.json"))

    errors = reference("error.json")
    wrong = {"Authorization": "Bearer wrong"}
    vertex_error = httpx.get(f"{url}{jobs}", headers=wrong).json()
    gcs_error = httpx.get(f"{url}/gcs/storage/v1/b/ftflow-data", headers=wrong).json()
    assert vertex_error["error"].keys() == errors["vertex"]["error"].keys()
    assert gcs_error["error"].keys() == errors["gcs"]["error"].keys()
    assert gcs_error["error"]["errors"][0].keys() == errors["gcs"]["error"]["errors"][0].keys()
