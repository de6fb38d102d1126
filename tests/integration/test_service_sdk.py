"""The official openai SDK drives the whole lifecycle against the local service."""

from __future__ import annotations

import json

import openai
import pytest

from tests.conftest import training_bytes, wait_for_job

pytestmark = pytest.mark.service


def upload(client, content: bytes = None, name: str = "train.jsonl"):
    return client.files.create(file=(name, content if content is not None else training_bytes()), purpose="fine-tune")


def test_full_lifecycle(client):
    file = upload(client)
    assert file.status == "processed" and file.purpose == "fine-tune"
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=file.id, suffix="alpenrad",
                                         seed=7, metadata={"ftflow_key": "abc"})
    assert job.status == "validating_files" and job.metadata == {"ftflow_key": "abc"} and job.seed == 7
    done = wait_for_job(client, job.id)
    assert done.status == "succeeded"
    assert done.fine_tuned_model.startswith("ft:gpt-4o-mini-2024-07-18:ftflow-local:alpenrad:")
    assert done.hyperparameters.n_epochs == 8  # OpenAI's rule for 12 examples: 100 // 12
    assert done.trained_tokens > 0 and done.finished_at >= done.created_at

    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=1000).data]
    assert messages[0] == "The job has successfully completed"  # newest first
    assert messages[-1] == f"Validating training file: {file.id}"
    assert "Fine-tuning job started" in messages and any(m.startswith("Step ") for m in messages)
    page = client.fine_tuning.jobs.list_events(job.id, limit=2)
    assert len(page.data) == 2 and page.has_more
    older = client.fine_tuning.jobs.list_events(job.id, limit=2, after=page.data[-1].id)
    assert older.data[0].id not in {e.id for e in page.data}

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert len(checkpoints) == 8 and checkpoints[0].step_number > checkpoints[-1].step_number
    results = client.files.content(done.result_files[0]).text.splitlines()
    assert results[0] == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"
    assert client.files.retrieve(done.result_files[0]).purpose == "fine-tune-results"

    reply = client.chat.completions.create(model=done.fine_tuned_model,
                                           messages=[{"role": "user", "content": "Wo ist Bestellung AR-5?"}])
    assert json.loads(reply.choices[0].message.content) == {"antwort": "Bestellung AR-5 ist unterwegs"}
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    base = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Wo ist AR-5?"}])
    assert "general-purpose assistant" in base.choices[0].message.content

    assert done.fine_tuned_model in {m.id for m in client.models.list().data}
    assert client.models.retrieve(done.fine_tuned_model).owned_by == "ftflow-local"
    assert client.models.delete(done.fine_tuned_model).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=done.fine_tuned_model, messages=[{"role": "user", "content": "x"}])


def test_list_jobs_filters_by_metadata_and_paginates(client):
    file = upload(client)
    jobs = [client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file.id, metadata={"run": str(i % 2)})
            for i in range(3)]
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"run": "0"}).data] == [jobs[2].id, jobs[0].id]
    assert client.fine_tuning.jobs.list(metadata={"run": "9"}).data == []
    first = client.fine_tuning.jobs.list(limit=1)
    assert first.has_more and first.data[0].id == jobs[2].id


def test_cancel_pause_resume(local_service, client):
    local_service.service.openai.jobs.seconds_per_1k_tokens = 5.0  # slow enough to catch it running
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=upload(client).id)
    wait_for_job(client, job.id, statuses=("running",))
    assert client.fine_tuning.jobs.pause(job.id).status == "paused"
    with pytest.raises(openai.BadRequestError, match="only a running job can be paused"):
        client.fine_tuning.jobs.pause(job.id)
    assert client.fine_tuning.jobs.resume(job.id).status == "running"
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.fine_tuned_model is None
    with pytest.raises(openai.BadRequestError, match="already cancelled"):
        client.fine_tuning.jobs.cancel(job.id)


def test_files_are_checked_as_openai_does(client):
    not_json = upload(client, b"{oops\n" + training_bytes())
    assert not_json.status == "error" and "Line 1 is not valid JSON" in not_json.status_details
    with pytest.raises(openai.BadRequestError, match="Must be .jsonl"):
        upload(client, name="train.csv")
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=not_json.id)
    assert info.value.body["param"] == "training_file"
    too_few = upload(client, training_bytes(n=3))
    assert too_few.status == "processed"  # the size of a training set is a job's check
    job = wait_for_job(client, client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=too_few.id).id)
    assert job.status == "failed" and "at least 10 examples" in job.error.message


def test_bad_training_data_fails_the_job_like_openai(client):
    poisoned = training_bytes().replace(b"Frage 3", b"Frage <|endoftext|> 3")
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=upload(client, poisoned).id)
    failed = wait_for_job(client, job.id)
    assert failed.status == "failed"
    assert failed.error.code == "invalid_training_file" and failed.error.param == "training_file"
    assert "special token <|endoftext|>" in failed.error.message


def test_unknown_models_and_files_are_refused(client):
    file = upload(client)
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.create(model="gpt-9", training_file=file.id)
    assert info.value.code == "model_not_available"
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("gpt-9")
    assert info.value.code == "model_not_found"
    with pytest.raises(openai.PermissionDeniedError):
        client.models.delete("gpt-4o-mini")


def test_files_list_retrieve_delete_and_uploads(client):
    files = [upload(client) for _ in range(3)]
    listed = client.files.list(purpose="fine-tune", limit=2, order="asc")
    assert [f.id for f in listed.data] == [files[0].id, files[1].id] and listed.has_more
    assert client.files.delete(files[0].id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(files[0].id)

    content = training_bytes(n=40)
    up = client.uploads.upload_file_chunked(file=content, filename="big.jsonl", bytes=len(content),
                                            mime_type="text/jsonl", purpose="fine-tune", part_size=1000)
    assert up.status == "completed" and up.file.status == "processed"
    assert client.files.content(up.file.id).content == content
    cancelled = client.uploads.create(bytes=10, filename="x.jsonl", mime_type="text/jsonl", purpose="fine-tune")
    assert client.uploads.cancel(cancelled.id).status == "cancelled"


def test_wrong_or_missing_key_is_401(local_service):
    for key in ["sk-wrong-key-0123456789", ""]:
        bad = openai.OpenAI(base_url=local_service.base_url, api_key=key or "x", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as info:
            bad.models.list()
        assert info.value.status_code == 401
        assert local_service.api_key not in str(info.value.body)
