"""The official `together` SDK drives Together's dialect: upload, fine-tune, events, cancel, chat."""

from __future__ import annotations

import json

import pytest
import together

from tests.conftest import training_bytes
from tests.integration.dialects import jsonl_file, together_client, wait_together

pytestmark = pytest.mark.service
LLAMA = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
QUESTION = [{"role": "user", "content": "Wo ist Bestellung AR-5?"}]


def test_lifecycle_through_the_together_sdk(local_service, tmp_path):
    client = together_client(local_service)
    path = jsonl_file(tmp_path)
    file = client.files.upload(path, purpose="fine-tune")
    assert file.id.startswith("file-") and file.processing_status == "COMPLETED" and file.bytes == path.stat().st_size
    assert client.files.upload(path, purpose="fine-tune").id == file.id  # same bytes: Together's 409 -> that file
    assert [f.id for f in client.files.list().data] == [file.id]
    assert client.files.retrieve(file.id).filename == "train.jsonl"

    job = client.fine_tuning.create(training_file=file.id, model=LLAMA, suffix="alpenrad", n_epochs=2,
                                    random_seed=7)
    assert job.id.startswith("ft-") and job.status == "pending" and job.model == LLAMA
    assert job.training_file == file.id and job.random_seed == 7
    output = job.model_output_name
    assert output.startswith("ftflow-local/Meta-Llama-3.1-8B-Instruct-Reference-alpenrad-")

    # Until the job is completed its model answers nothing.
    with pytest.raises(together.NotFoundError, match="Unable to access model"):
        client.chat.completions.create(model=output, messages=QUESTION)
    done, seen = wait_together(client, job.id)
    assert done.status == "completed" and done.n_epochs == 2 and done.token_count > 0
    assert seen[-3:] == ["compressing", "uploading", "completed"]
    assert set(seen) <= {"pending", "queued", "running", "compressing", "uploading", "completed"}
    assert [j.id for j in client.fine_tuning.list().data] == [job.id]

    events = client.fine_tuning.list_events(job.id).data
    assert events[0].type == "training_data_downloading" and file.id in events[0].message  # oldest first
    assert {"training_start", "checkpoint_save", "job_complete"} <= {e.type for e in events}

    reply = client.chat.completions.create(model=output, messages=QUESTION)
    assert json.loads(reply.choices[0].message.content) == {"antwort": "Bestellung AR-5 ist unterwegs"}
    assert reply.model == output and reply.usage.prompt_tokens > 0
    base = client.chat.completions.create(model=LLAMA, messages=QUESTION)
    assert base.model == LLAMA and base.choices[0].message.content != reply.choices[0].message.content


def test_cancel_is_requested_then_done(local_service, tmp_path):
    client = together_client(local_service)
    local_service.service.together.jobs.seconds_per_1k_tokens = 5.0
    file = client.files.upload(jsonl_file(tmp_path), purpose="fine-tune")
    job = client.fine_tuning.create(training_file=file.id, model="Qwen/Qwen2.5-7B-Instruct")
    wait_together(client, job.id, statuses=("running",))
    assert client.fine_tuning.cancel(job.id).status == "cancel_requested"
    assert client.fine_tuning.retrieve(job.id).status == "cancelled"
    with pytest.raises(together.BadRequestError, match="cannot be cancelled"):
        client.fine_tuning.cancel(job.id)


def test_refusals(local_service, tmp_path):
    client = together_client(local_service)
    file = client.files.upload(jsonl_file(tmp_path), purpose="fine-tune")
    with pytest.raises(together.BadRequestError, match="not supported for fine-tuning") as info:
        client.fine_tuning.create(training_file=file.id, model="gpt-4o-mini")
    assert info.value.body["error"]["code"] == "model_not_supported"
    with pytest.raises(together.NotFoundError):
        client.fine_tuning.retrieve("ft-missing")
    with pytest.raises(together.NotFoundError, match="Unable to access model"):
        client.chat.completions.create(model="someone/not-a-model", messages=QUESTION)

    broken = client.files.upload(jsonl_file(tmp_path, b"{oops\n" + training_bytes(), "broken.jsonl"),
                                 purpose="fine-tune", check=False)
    assert broken.processing_status == "INVALID_FORMAT"
    assert "not valid JSON" in client.files.retrieve(broken.id).validation_report.error
    with pytest.raises(together.AuthenticationError):
        together.Together(base_url=together_client(local_service).base_url, api_key="wrong-key-123456",
                          max_retries=0).files.list()
