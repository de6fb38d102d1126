"""The real `google-genai` and `google-cloud-storage` SDKs drive the Vertex AI and Cloud Storage dialects."""

from __future__ import annotations

import json

import httpx
import pytest
from google.genai import errors, types

from ftflow.formats.gemini import render_jsonl
from tests.conftest import preference, training_bytes
from tests.integration.dialects import LOCATION, PROJECT, jsonl_file, root, storage_client, vertex_client, wait_vertex

pytestmark = pytest.mark.service
VERTEX_STATES = {s.value for s in types.JobState}
MODEL = "gemini-2.5-flash"


def upload(service, monkeypatch, tmp_path, content: bytes, name: str, bucket: str = "ftflow-data") -> str:
    gcs = storage_client(service, monkeypatch)
    if gcs.lookup_bucket(bucket) is None:
        gcs.create_bucket(bucket)
    gcs.bucket(bucket).blob(name).upload_from_filename(str(jsonl_file(tmp_path, content, name)))
    return f"gs://{bucket}/{name}"


def test_storage_buckets_and_objects_through_the_sdk(local_service, monkeypatch, tmp_path):
    from google.api_core import exceptions

    gcs = storage_client(local_service, monkeypatch)
    bucket = gcs.create_bucket("ftflow-data")
    assert bucket.name == "ftflow-data" and gcs.get_bucket("ftflow-data").name == "ftflow-data"
    with pytest.raises(exceptions.Conflict):
        gcs.create_bucket("ftflow-data")
    content = render_jsonl(training_bytes())
    small = bucket.blob("small.jsonl")
    small.upload_from_string(content)  # multipart
    big = bucket.blob("big.jsonl", chunk_size=256 * 1024)  # resumable, in chunks
    big_content = content * 800
    big.upload_from_string(big_content)
    assert bucket.blob("small.jsonl").download_as_bytes() == content
    assert bucket.get_blob("big.jsonl").size == len(big_content) > 2 * 256 * 1024
    assert bucket.blob("big.jsonl").download_as_bytes() == big_content
    assert sorted(b.name for b in gcs.list_blobs("ftflow-data")) == ["big.jsonl", "small.jsonl"]
    assert [b.name for b in gcs.list_blobs("ftflow-data", prefix="sm")] == ["small.jsonl"]
    bucket.blob("small.jsonl").delete()
    assert gcs.bucket("ftflow-data").get_blob("small.jsonl") is None
    with pytest.raises(exceptions.NotFound):
        gcs.get_bucket("missing-bucket")


def test_tuning_lifecycle_through_google_genai(local_service, monkeypatch, tmp_path):
    train = upload(local_service, monkeypatch, tmp_path, render_jsonl(training_bytes()), "train.jsonl")
    client = vertex_client(local_service)
    job = client.tunings.tune(base_model=MODEL, training_dataset=types.TuningDataset(gcs_uri=train),
                              config=types.CreateTuningJobConfig(epoch_count=2, labels={"ftflow-key": "abc123"},
                                                                 tuned_model_display_name="alpenrad"))
    assert job.name.startswith(f"projects/{PROJECT}/locations/{LOCATION}/tuningJobs/")
    assert job.state == types.JobState.JOB_STATE_PENDING and job.labels == {"ftflow-key": "abc123"}
    done, seen = wait_vertex(client, job.name)
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED and set(seen) <= VERTEX_STATES
    assert seen[-1] == "JOB_STATE_SUCCEEDED" and "JOB_STATE_RUNNING" in seen
    stats = done.tuning_data_stats.supervised_tuning_data_stats
    assert stats.tuning_dataset_example_count == 12 and stats.total_billable_token_count > 0
    assert done.tuned_model.endpoint.startswith(f"projects/{PROJECT}/locations/{LOCATION}/endpoints/")

    reply = client.models.generate_content(model=done.tuned_model.endpoint, contents="Frage 5: Wo ist Bestellung AR-5?",
                                           config=types.GenerateContentConfig(temperature=0))
    assert json.loads(reply.text) == {"antwort": "Bestellung AR-5 ist unterwegs"}
    assert reply.usage_metadata.prompt_token_count > 0 and reply.usage_metadata.candidates_token_count > 0
    base = client.models.generate_content(model=MODEL, contents="Frage 5: Wo ist Bestellung AR-5?")
    assert base.text != reply.text

    listed = list(client.tunings.list(config=types.ListTuningJobsConfig(filter='labels.ftflow-key="abc123"')))
    assert [(j.name, j.labels) for j in listed] == [(job.name, {"ftflow-key": "abc123"})]
    assert list(client.tunings.list(config=types.ListTuningJobsConfig(filter='labels.ftflow-key="other"'))) == []


def test_preference_tuning_takes_geminis_preference_format(local_service, monkeypatch, tmp_path):
    pairs = b"".join(json.dumps(preference(f"Frage {i}", f"gut {i}", f"schlecht {i}")).encode() + b"\n"
                     for i in range(10))
    train = upload(local_service, monkeypatch, tmp_path, render_jsonl(pairs), "pairs.jsonl")
    client = vertex_client(local_service)
    job = client.tunings.tune(base_model=MODEL, training_dataset=types.TuningDataset(gcs_uri=train),
                              config=types.CreateTuningJobConfig(method="PREFERENCE_TUNING", beta=0.1))
    done, seen = wait_vertex(client, job.name)
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED, done.error
    assert done.tuning_data_stats.preference_optimization_data_stats.tuning_dataset_example_count == 10


def test_an_openai_format_file_fails_the_job_with_the_line_and_reason(local_service, monkeypatch, tmp_path):
    train = upload(local_service, monkeypatch, tmp_path, training_bytes(), "openai.jsonl")
    client = vertex_client(local_service)
    job = client.tunings.tune(base_model=MODEL, training_dataset=types.TuningDataset(gcs_uri=train))
    done, _ = wait_vertex(client, job.name)
    assert done.state == types.JobState.JOB_STATE_FAILED
    assert "line 1" in done.error.message and "contents" in done.error.message and "messages" in done.error.message


def test_cancel_shows_cancelling_then_cancelled(local_service, monkeypatch, tmp_path):
    local_service.service.vertex.jobs.seconds_per_1k_tokens = 5.0
    train = upload(local_service, monkeypatch, tmp_path, render_jsonl(training_bytes()), "train.jsonl")
    client = vertex_client(local_service)
    job = client.tunings.tune(base_model=MODEL, training_dataset=types.TuningDataset(gcs_uri=train))
    wait_vertex(client, job.name, states=("JOB_STATE_RUNNING",))
    client.tunings.cancel(name=job.name)
    done, seen = wait_vertex(client, job.name)
    assert seen[0] == "JOB_STATE_CANCELLING" and done.state == types.JobState.JOB_STATE_CANCELLED
    with pytest.raises(errors.ClientError) as cancelled_again:
        client.tunings.cancel(name=job.name)
    assert cancelled_again.value.code == 400 and cancelled_again.value.status == "INVALID_ARGUMENT"


def test_a_wrong_key_is_refused_in_googles_envelope(local_service, monkeypatch):
    from google.auth.exceptions import RefreshError

    client = vertex_client(local_service, key="wrong-key")  # held: the SDK closes its connection with the client
    with pytest.raises(errors.ClientError) as refused:
        client.tunings.get(name=f"projects/{PROJECT}/locations/{LOCATION}/tuningJobs/1")
    assert refused.value.code == 401 and refused.value.status == "UNAUTHENTICATED"
    assert "wrong-key" not in str(refused.value)
    # Storage answers 401 in its envelope; the SDK then tries to refresh the token, which a bare token cannot
    answer = httpx.get(f"{root(local_service)}/gcs/storage/v1/b/ftflow-data",
                       headers={"Authorization": "Bearer wrong-key"})
    assert answer.status_code == 401 and answer.json()["error"]["errors"][0]["reason"] == "authError"
    with pytest.raises(RefreshError):
        storage_client(local_service, monkeypatch, key="wrong-key").create_bucket("ftflow-data")


def test_refusals_name_the_model_the_permission_and_the_quota(local_service, monkeypatch, tmp_path):
    train = upload(local_service, monkeypatch, tmp_path, render_jsonl(training_bytes()), "train.jsonl")
    client = vertex_client(local_service)
    dataset = types.TuningDataset(gcs_uri=train)
    with pytest.raises(errors.ClientError, match="gemini-1.0-pro is not supported for tuning") as unsupported:
        client.tunings.tune(base_model="gemini-1.0-pro", training_dataset=dataset)
    assert unsupported.value.status == "INVALID_ARGUMENT"
    local_service.service.vertex.config = local_service.service.vertex.config.model_copy(update={"daily_job_limit": 0})
    with pytest.raises(errors.ClientError, match="Quota exceeded") as quota:
        client.tunings.tune(base_model=MODEL, training_dataset=dataset)
    assert quota.value.code == 429 and quota.value.status == "RESOURCE_EXHAUSTED"
    local_service.service.vertex.config = local_service.service.vertex.config.model_copy(
        update={"daily_job_limit": None, "refusal": "Tuning is not enabled for this project."})
    with pytest.raises(errors.ClientError, match="aiplatform.tuningJobs.create' denied") as denied:
        client.tunings.tune(base_model=MODEL, training_dataset=dataset)
    assert denied.value.code == 403 and denied.value.status == "PERMISSION_DENIED"
