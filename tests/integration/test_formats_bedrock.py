"""Bedrock's formats rendered from chat examples, and Nova's per-example rules (stable reasons)."""

from __future__ import annotations

import json

import pytest

from ftflow.formats.bedrock import (
    NOVA_REASONS,
    format_for,
    nova_rules,
    render,
    to_conversation,
    to_prompt_completion,
)
from tasks.provider_rules import rules_for
from tasks.readers.transcript import DEFAULT_SPEAKERS, parse_transcript


def example(*turns: tuple[str, str]) -> dict:
    return {"messages": [{"role": role, "content": content} for role, content in turns]}


def test_nova_conversation_moves_system_out_and_wraps_text():
    record = to_conversation(example(("system", "Antworte als JSON."), ("user", "Wo ist AR-1?"),
                                     ("assistant", '{"antwort": "unterwegs"}')))
    assert record == {"schemaVersion": "bedrock-conversation-2024", "system": [{"text": "Antworte als JSON."}],
                      "messages": [{"role": "user", "content": [{"text": "Wo ist AR-1?"}]},
                                   {"role": "assistant", "content": [{"text": '{"antwort": "unterwegs"}'}]}]}


def test_prompt_completion_takes_the_last_answer_as_completion():
    single = to_prompt_completion(example(("user", "Wo ist AR-1?"), ("assistant", "unterwegs")))
    assert single == {"prompt": "Wo ist AR-1?", "completion": "unterwegs"}
    multi = to_prompt_completion(example(("system", "Sei kurz."), ("user", "Hallo"), ("assistant", "Hallo!"),
                                         ("user", "Wo ist AR-1?"), ("assistant", "unterwegs")))
    assert multi == {"prompt": "system: Sei kurz.\nuser: Hallo\nassistant: Hallo!\nuser: Wo ist AR-1?",
                     "completion": "unterwegs"}


def test_render_is_deterministic_and_picks_the_format_by_model():
    lines = [json.dumps(example(("user", f"Frage {i}"), ("assistant", f"Antwort {i}"))).encode() for i in range(3)]
    assert format_for("amazon.nova-micro-v1:0:128k") == "conversation"
    assert format_for("meta.llama3-1-8b-instruct-v1:0:128k") == format_for("amazon.titan-text-express-v1:0:8k") \
        == "prompt_completion"
    nova = render(lines, "conversation")
    assert nova == render(lines, "conversation") and len(nova.splitlines()) == 3
    assert json.loads(render(lines, "prompt_completion").splitlines()[2]) == {"prompt": "Frage 2",
                                                                               "completion": "Antwort 2"}
    assert render([b"\n"], "conversation") == b""


@pytest.mark.parametrize(("turns", "reason", "detail"), [
    ((("user", "Hallo"), ("assistant", "Bot: Hallo!")), "nova_reserved_string", "'Bot:' in message 1 (assistant)"),
    ((("system", "System: sei nett"), ("user", "Hi"), ("assistant", "Hi")), "nova_reserved_string",
     "'System:' in message 0 (system)"),
    ((("user", "Was heißt [EOS]?"), ("assistant", "Ende")), "nova_reserved_string", "'[EOS]' in message 0 (user)"),
    ((("assistant", "Hallo"), ("user", "Hi"), ("assistant", "Hi")), "nova_first_turn_not_user",
     "the first turn is assistant"),
    ((("user", "Hallo"), ("assistant", "Hi"), ("user", "Danke")), "nova_last_turn_not_assistant",
     "the last turn is user"),
    ((("user", "Hallo"), ("system", "neu"), ("assistant", "Hi")), "nova_unsupported_role",
     "a system message (Nova takes system, user and assistant text)"),
    ((("system", "nur System"),), "nova_first_turn_not_user", "the first turn is missing"),
])
def test_nova_rules_name_the_reason_and_the_offending_string(turns, reason, detail):
    assert nova_rules(example(*turns)) == (reason, detail)


def test_every_nova_reason_has_a_case():
    cases = test_nova_rules_name_the_reason_and_the_offending_string.pytestmark[0].args[1]
    assert {reason for _, reason, _ in cases} == NOVA_REASONS


def test_nova_rules_pass_clean_examples_and_are_bedrocks_registered_rules():
    assert nova_rules(example(("system", "Sei kurz."), ("user", "Hallo"), ("assistant", "Hi"))) is None
    assert rules_for("bedrock") is nova_rules


def test_a_raw_transcript_speaking_user_and_bot_becomes_turns_before_the_rules():
    turns = parse_transcript("User: Wo ist mein Rad?\nBot: Es ist unterwegs.\n", DEFAULT_SPEAKERS)
    assert [t["role"] for t in turns] == ["user", "assistant"]
    assert nova_rules({"messages": [{"role": t["role"], "content": t["content"].strip()} for t in turns]}) is None


@pytest.mark.flow
def test_prepare_for_bedrock_converts_user_bot_transcripts_and_quarantines_reserved_strings(prefect_server, tmp_path,
                                                                                            monkeypatch):
    from typer.testing import CliRunner

    from ftflow.cli import app
    from tests.conftest import chat, write_jsonl

    monkeypatch.setenv("FTFLOW_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("FTFLOW_BACKEND", "bedrock")
    monkeypatch.setenv("FTFLOW_MODEL", "amazon.nova-micro-v1:0:128k")
    examples = [chat(f"Wo ist Bestellung AR-{i}?", f"Bot: AR-{i} ist unterwegs." if i % 10 == 0
                     else f"AR-{i} ist unterwegs.") for i in range(30)]
    data = write_jsonl(tmp_path / "data.jsonl", examples)
    transcripts = tmp_path / "logs"
    transcripts.mkdir()
    for i in range(10):
        (transcripts / f"t{i}.txt").write_text(f"User: Wann kommt Rad R-{i}?\nBot: Rad R-{i} kommt morgen.\n")
    result = CliRunner().invoke(app, ["prepare", str(data), str(transcripts / "*.txt"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, (result.output, result.stderr)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["rejected_by_stage"]["provider_rules"] == {"nova_reserved_string": 3}
    rejected = [json.loads(line) for line in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert {r["detail"] for r in rejected} == {"'Bot:' in message 1 (assistant)"}
    kept = [json.loads(line) for name in ("train", "validation")
            for line in (tmp_path / "out" / f"{name}.jsonl").read_text().splitlines()]
    assert len(kept) == 37 and not any(nova_rules(example) for example in kept)  # every transcript kept
