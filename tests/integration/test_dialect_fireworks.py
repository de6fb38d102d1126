"""The `fireworks-ai` SDK drives Fireworks' dialect: datasets, SFT jobs with a chosen id (409 twice), DPO, chat."""

from __future__ import annotations

import json
import time

import fireworks
import openai
import pytest

from tests.conftest import preference, training_bytes
from tests.integration.dialects import fireworks_client, root

pytestmark = pytest.mark.service
LLAMA = "accounts/fireworks/models/llama-v3p1-8b-instruct"
DONE = ("JOB_STATE_COMPLETED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED")
STATES = {"JOB_STATE_VALIDATING", "JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_WRITING_RESULTS", *DONE}
QUESTION = [{"role": "user", "content": "Frage 5: Wo ist Bestellung AR-5?"}]


def wait(get, name: str, until=DONE, timeout: float = 30.0):
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        job = get(name.rsplit("/", 1)[-1])
        if not seen or seen[-1] != job.state:
            seen.append(job.state)
        if job.state in until:
            return job, seen
        assert time.monotonic() < deadline, seen
        time.sleep(0.05)


def dataset(client, dataset_id: str, content: bytes):
    created = client.datasets.create(dataset_id=dataset_id, dataset={"format": "CHAT", "display_name": dataset_id})
    assert created.state == "UPLOADING" and created.name == f"accounts/ftflow/datasets/{dataset_id}"
    client.datasets.upload(dataset_id, file=("train.jsonl", content))
    return client.datasets.get(dataset_id)


def test_dataset_then_sft_job_with_a_chosen_id_completes_and_answers(local_service):
    client = fireworks_client(local_service)
    ready = dataset(client, "alpenrad-train", training_bytes())
    assert ready.state == "READY" and ready.example_count == "12"
    with pytest.raises(fireworks.ConflictError):
        client.datasets.create(dataset_id="alpenrad-train", dataset={"format": "CHAT"})

    job = client.supervised_fine_tuning_jobs.create(dataset=ready.name, base_model=LLAMA, epochs=2,
                                                    supervised_fine_tuning_job_id="ftflow-0123456789")
    assert job.name == "accounts/ftflow/supervisedFineTuningJobs/ftflow-0123456789"
    with pytest.raises(fireworks.ConflictError, match="already exists"):
        client.supervised_fine_tuning_jobs.create(dataset=ready.name, base_model=LLAMA,
                                                  supervised_fine_tuning_job_id="ftflow-0123456789")
    assert len(client.supervised_fine_tuning_jobs.list().supervised_fine_tuning_jobs) == 1

    done, seen = wait(client.supervised_fine_tuning_jobs.get, job.name)
    assert done.state == "JOB_STATE_COMPLETED" and set(seen) <= STATES and seen[-2] == "JOB_STATE_WRITING_RESULTS"
    assert done.output_model == "accounts/ftflow/models/ftflow-0123456789" and done.epochs == 2

    chat = openai.OpenAI(base_url=f"{root(local_service)}/fireworks/inference/v1", api_key=local_service.api_key,
                         max_retries=0)
    reply = chat.chat.completions.create(model=done.output_model, messages=QUESTION)
    assert json.loads(reply.choices[0].message.content) == {"antwort": "Bestellung AR-5 ist unterwegs"}
    assert reply.model == done.output_model and reply.usage.prompt_tokens > 0
    sdk_reply = client.chat.completions.create(model=LLAMA, messages=QUESTION)
    assert sdk_reply.choices[0].message.content != reply.choices[0].message.content


def test_dpo_job_on_preference_pairs(local_service):
    client = fireworks_client(local_service)
    pairs = [preference(f"Wo ist AR-{i}?", f"AR-{i} ist unterwegs.", "Keine Ahnung.") for i in range(12)]
    ready = dataset(client, "alpenrad-pairs", "\n".join(map(json.dumps, pairs)).encode())
    job = client.dpo_jobs.create(dataset=ready.name, dpo_job_id="ftflow-dpo-1",
                                 training_config={"base_model": LLAMA, "epochs": 1},
                                 loss_config={"method": "DPO", "kl_beta": 0.1})
    done, seen = wait(client.dpo_jobs.get, job.name)
    assert done.state == "JOB_STATE_COMPLETED" and set(seen) <= STATES
    assert done.training_config.base_model == LLAMA
    with pytest.raises(fireworks.ConflictError):
        client.dpo_jobs.create(dataset=ready.name, dpo_job_id="ftflow-dpo-1", training_config={"base_model": LLAMA})


def test_cancel_and_a_bad_file_and_a_wrong_key(local_service):
    client = fireworks_client(local_service)
    local_service.service.fireworks.jobs.seconds_per_1k_tokens = 5.0
    ready = dataset(client, "slow", training_bytes())
    job = client.supervised_fine_tuning_jobs.create(dataset=ready.name, base_model=LLAMA,
                                                    supervised_fine_tuning_job_id="slow-1")
    wait(client.supervised_fine_tuning_jobs.get, job.name, until=("JOB_STATE_RUNNING",))
    client.supervised_fine_tuning_jobs.cancel("slow-1", body={})
    assert wait(client.supervised_fine_tuning_jobs.get, job.name)[0].state == "JOB_STATE_CANCELLED"

    client.datasets.create(dataset_id="bad", dataset={"format": "CHAT"})
    with pytest.raises(fireworks.BadRequestError, match="not valid"):
        client.datasets.upload("bad", file=("bad.jsonl", b'{"messages": []}\n'))
    assert client.datasets.get("bad").state == "UPLOADING"

    with pytest.raises(fireworks.AuthenticationError) as refused:
        fireworks_client(local_service, api_key="fw-wrong").datasets.get("slow")
    assert refused.value.status_code == 401 and refused.value.body["code"] == 16
