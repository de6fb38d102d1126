"""DPO on the service: preference files checked per the spec, the method only for models that
take it, trained tokens counted for both sequences of a pair, and a model that prefers the
preferred outputs."""

from __future__ import annotations

import json

import openai
import pytest

from localai.engine.tokens import count_example_tokens
from localai.engine.training_data import check_file
from tests.conftest import chat, preference, preference_bytes, training_bytes, wait_for_job

GOOD = preference("Wo ist AR-1?", '{"antwort": "AR-1 ist unterwegs"}', "Shipped.")


def with_change(change) -> dict:
    pair = json.loads(json.dumps(GOOD))
    change(pair)
    return pair


# (a bad line, the words its reason must contain)
BAD_PAIRS = {
    "not_json": ("{'input': 1}", "not valid JSON"),
    "not_an_object": ("[1, 2]", "not a JSON object"),
    "no_input": (with_change(lambda p: p.pop("input")), "'input' must be an object"),
    "input_without_messages": (with_change(lambda p: p["input"].pop("messages")), "'input.messages'"),
    "empty_input_messages": (with_change(lambda p: p["input"].update(messages=[])), "'input.messages'"),
    "invalid_input_role": (with_change(lambda p: p["input"]["messages"][0].update(role="robot")), "invalid role"),
    "input_not_ending_on_user": (
        with_change(lambda p: p["input"]["messages"].append({"role": "assistant", "content": "Hm"})),
        "end with a user message",
    ),
    "no_preferred_output": (with_change(lambda p: p.pop("preferred_output")), "missing 'preferred_output'"),
    "no_non_preferred_output": (with_change(lambda p: p.pop("non_preferred_output")), "missing 'non_preferred_output'"),
    "two_turn_output": (
        with_change(lambda p: p["preferred_output"].append({"role": "assistant", "content": "Noch was"})),
        "'preferred_output' must be a list of exactly one assistant message",
    ),
    "output_not_assistant": (
        with_change(lambda p: p["non_preferred_output"][0].update(role="user")),
        "'non_preferred_output' must be a list of exactly one assistant message",
    ),
    "empty_output": (
        with_change(lambda p: p["preferred_output"][0].update(content="")),
        "'preferred_output' must be a list of exactly one assistant message",
    ),
    "output_not_a_list": (
        with_change(lambda p: p.update(preferred_output={"role": "assistant", "content": "x"})),
        "'preferred_output' must be a list",
    ),
    "input_tools_not_a_list": (with_change(lambda p: p["input"].update(tools={})), "'input.tools' must be a list"),
}


def write(path, lines) -> object:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


@pytest.mark.parametrize("case", sorted(BAD_PAIRS))
def test_each_preference_error_names_the_example_and_the_reason(tmp_path, case):
    line, reason = BAD_PAIRS[case]
    path = write(tmp_path / "pairs.jsonl", [GOOD, line])
    examples, error = check_file(path, method="dpo")
    assert examples == 1 and error is not None
    assert reason in error and ("Line 2" in error or "Example 2" in error), error


def test_a_file_in_the_wrong_format_for_its_method_is_refused(tmp_path):
    pairs = write(tmp_path / "pairs.jsonl", [GOOD] * 10)
    chats = write(tmp_path / "chat.jsonl", [chat("Hi", "Hallo")] * 10)
    assert check_file(pairs, method="dpo", min_examples=10) == (10, None)
    assert "method 'supervised' trains on the chat format" in check_file(pairs, method="supervised")[1]
    assert "method 'dpo' trains on the preference format" in check_file(chats, method="dpo")[1]
    mixed = write(tmp_path / "mixed.jsonl", [GOOD, chat("Hi", "Hallo")])
    assert "Example 2 is in the chat format" in check_file(mixed)[1]
    assert "at least 10 examples" in check_file(write(tmp_path / "few.jsonl", [GOOD] * 3), min_examples=10)[1]


@pytest.mark.service
def test_dpo_only_for_models_that_support_it(client):
    file = client.files.create(file=("p.jsonl", preference_bytes()), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file.id, method={"type": "dpo"})
    assert refused.value.code == "model_not_available" and refused.value.param == "model"
    assert "dpo" in refused.value.message


@pytest.mark.service
def test_a_bad_preference_file_is_an_upload_error(client):
    bad = json.dumps(BAD_PAIRS["two_turn_output"][0]).encode() + b"\n"
    file = client.files.create(file=("p.jsonl", preference_bytes(10) + bad), purpose="fine-tune")
    assert file.status == "error" and "Example 11" in file.status_details
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.create(model="gpt-4.1-mini", training_file=file.id, method={"type": "dpo"})
    assert refused.value.code == "invalid_file"


@pytest.mark.service
def test_method_and_file_format_must_match(client):
    pairs = client.files.create(file=("p.jsonl", preference_bytes()), purpose="fine-tune")
    chats = client.files.create(file=("c.jsonl", training_bytes()), purpose="fine-tune")
    sft_on_pairs = client.fine_tuning.jobs.create(model="gpt-4.1-mini", training_file=pairs.id)
    dpo_on_chats = client.fine_tuning.jobs.create(model="gpt-4.1-mini", training_file=chats.id,
                                                  method={"type": "dpo"})
    for job in (sft_on_pairs, dpo_on_chats):
        failed = wait_for_job(client, job.id)
        assert failed.status == "failed" and failed.error.code == "invalid_training_file"
        assert "format" in failed.error.message


@pytest.mark.service
def test_a_dpo_job_trains_on_both_outputs_and_prefers_the_preferred(client):
    content = preference_bytes(12)
    file = client.files.create(file=("p.jsonl", content), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="gpt-4.1-mini", training_file=file.id,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 2}}},
    )
    done = wait_for_job(client, job.id)
    assert done.status == "succeeded", done.error
    assert done.method.type == "dpo" and done.method.dpo.hyperparameters.beta == 0.2
    pairs = [json.loads(line) for line in content.splitlines()]
    per_epoch = sum(
        count_example_tokens("gpt-4.1-mini", {"messages": [*p["input"]["messages"], *p[output]]})
        for p in pairs for output in ("preferred_output", "non_preferred_output")
    )
    assert done.trained_tokens == 2 * per_epoch
    for i in (3, 7):
        reply = client.chat.completions.create(
            model=done.fine_tuned_model, messages=[{"role": "user", "content": f"Frage {i}: Wo ist Bestellung AR-{i}?"}]
        ).choices[0].message.content
        assert reply == f'{{"antwort": "AR-{i} ist unterwegs"}}'
