"""Gemini's tuning formats and per-example rules (ftflow/formats/gemini.py), and the budget's Gemini estimate."""

from __future__ import annotations

import orjson

from ftflow.formats.gemini import (
    MAX_EXAMPLE_TOKENS,
    TOKEN_RULE,
    example_tokens,
    gemini_rules,
    render_jsonl,
    to_gemini_preference,
    to_gemini_sft,
)
from tasks.budget import estimate_budget
from tasks.passes.chat import ChatPass
from tasks.provider_rules import rules_for
from tasks.readers import ExtractOptions
from tasks.transform import TransformOptions
from tests.conftest import chat, write_jsonl


def test_a_chat_example_becomes_system_instruction_and_user_model_contents():
    example = {"messages": [{"role": "system", "content": "Du bist der Support."},
                            {"role": "user", "content": [{"type": "text", "text": "Wo ist "}, {"type": "text",
                                                                                               "text": "AR-1?"}]},
                            {"role": "assistant", "content": "Unterwegs.", "weight": 1}]}
    assert to_gemini_sft(example) == {
        "systemInstruction": {"parts": [{"text": "Du bist der Support."}]},
        "contents": [{"role": "user", "parts": [{"text": "Wo ist AR-1?"}]},
                     {"role": "model", "parts": [{"text": "Unterwegs."}]}]}
    assert "systemInstruction" not in to_gemini_sft(chat("q", "a"))


def test_a_preference_pair_becomes_contents_ending_on_user_and_scored_completions():
    pair = {"input": {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]},
            "preferred_output": [{"role": "assistant", "content": "good"}],
            "non_preferred_output": [{"role": "assistant", "content": "bad"}]}
    assert to_gemini_preference(pair) == {
        "system_instruction": {"parts": [{"text": "S"}]},
        "contents": [{"role": "user", "parts": [{"text": "Q"}]}],
        "completions": [{"score": 1, "completion": {"role": "model", "parts": [{"text": "good"}]}},
                        {"score": 0, "completion": {"role": "model", "parts": [{"text": "bad"}]}}]}


def test_render_converts_each_line_and_is_deterministic():
    data = b"".join(orjson.dumps(e) + b"\n" for e in (chat("a", "b"), chat("c", "d", system="s")))
    rendered = render_jsonl(data)
    assert rendered == render_jsonl(data)
    lines = [orjson.loads(line) for line in rendered.splitlines()]
    assert [line["contents"][1]["role"] for line in lines] == ["model", "model"]
    assert lines[1]["systemInstruction"] == {"parts": [{"text": "s"}]}


def test_rules_refuse_what_gemini_cannot_take_with_a_stable_reason():
    assert rules_for("vertex") is gemini_rules and rules_for("openai") is None
    assert gemini_rules(chat("q", "a", system="s")) is None
    tool = {"messages": [{"role": "user", "content": "q"},
                         {"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                                               "function": {"name": "f", "arguments": "{}"}}]},
                         {"role": "tool", "tool_call_id": "c", "content": "x"}, {"role": "assistant", "content": "a"}]}
    assert gemini_rules(tool)[0] == "gemini_tool_calls"
    late_system = {"messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "s"},
                                {"role": "assistant", "content": "a"}]}
    assert gemini_rules(late_system) == ("gemini_system_not_first", "message 2 is a system message; Gemini takes "
                                         "one systemInstruction, before the conversation")
    weighted = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0},
                             {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    assert gemini_rules(weighted)[0] == "gemini_message_weight"
    long = chat("x" * (4 * MAX_EXAMPLE_TOKENS - 1), "y")  # 4 chars a token: just within
    assert example_tokens(long) == MAX_EXAMPLE_TOKENS and gemini_rules(long) is None
    reason, detail = gemini_rules(chat("x" * (4 * MAX_EXAMPLE_TOKENS), "y"))
    assert reason == "gemini_too_long" and "estimate" in detail and "131073" in detail


def test_a_pair_counts_its_input_and_longer_output():
    pair = {"input": {"messages": [{"role": "user", "content": "x" * 8}]},
            "preferred_output": [{"role": "assistant", "content": "y" * 4}],
            "non_preferred_output": [{"role": "assistant", "content": "z" * 12}]}
    assert example_tokens(pair) == 5


def test_the_budget_of_a_gemini_model_counts_the_documented_estimate_and_says_so(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [chat("x" * 40, "y" * 20)] * 3)
    validation = write_jsonl(tmp_path / "validation.jsonl", [chat("x" * 4, "y" * 4)])
    examples = ChatPass.for_model("gemini-2.5-flash", ExtractOptions(), TransformOptions(), 0.1)
    budget = estimate_budget.fn(str(tmp_path / "missing.parquet"), examples, "gemini-2.5-flash", 0, 2, None,
                                {"train": str(train), "validation": str(validation)})
    assert budget.tokens["train"] == 3 * 15 and budget.tokens["total"] == 47 and budget.tokens["assistant"] == 16
    assert budget.encoding == TOKEN_RULE and budget.billing_tokens == 90
    assert budget.estimated_cost_usd == round(90 / 1e6 * 5.0, 4)


def test_the_preference_budget_of_a_gemini_model_counts_the_documented_estimate(tmp_path):
    from tasks.passes.preference import PreferencePass
    from tests.conftest import preference

    train = write_jsonl(tmp_path / "train.jsonl", [preference("x" * 8, "y" * 4, "z" * 12)] * 2)
    validation = write_jsonl(tmp_path / "validation.jsonl", [preference("x" * 4, "y" * 4, "z" * 4)])
    pairs = PreferencePass.for_model("gemini-2.5-flash", ExtractOptions(), TransformOptions(), 0.1)
    budget = estimate_budget.fn(str(tmp_path / "missing.parquet"), pairs, "gemini-2.5-flash", 0, 1, None,
                                {"train": str(train), "validation": str(validation)})
    # a pair trains on (input + preferred) and (input + non-preferred): 2 + 1 + 2 + 3 tokens
    assert budget.tokens["train"] == 2 * 8 and budget.billing_tokens == 16 and budget.encoding == TOKEN_RULE
    assert budget.tokens["max_example"] == 5 and budget.tokens["input"] == 2 + 2 + 1
