from __future__ import annotations

import re

import pandas as pd
import pytest

from ftflow.encodings import get_encoding
from tasks.quality import REASONS, ExampleRejected, check_example, run_suites
from tests.conftest import ROOT

ENC = get_encoding("o200k_base")
U = {"role": "user", "content": "Wo ist meine Bestellung?"}
A = {"role": "assistant", "content": "Unterwegs."}
CALL = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"id": 1}'}}

# One bad example per example-level reason (the record-level ones are in test_extract.py).
BAD_EXAMPLES = {
    "data_type": {"messages": [U, "assistant: hi"]},
    "missing_messages": {"messages": []},
    "unknown_key": {"messages": [U, {**A, "mood": "happy"}]},
    "unknown_role": {"messages": [{"role": "narrator", "content": "x"}, A]},
    "missing_content": {"messages": [{"role": "user"}, A]},
    "non_string_content": {"messages": [{"role": "user", "content": 42}, A]},
    "empty_content": {"messages": [U, {"role": "assistant", "content": "   "}]},
    "no_assistant_message": {"messages": [U]},
    "malformed_tool_calls": {
        "messages": [
            U,
            {"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "f", "arguments": "{oops"}}]},
        ]
    },
    "malformed_tools": {"messages": [U, A], "tools": [{"type": "function"}]},
    "invalid_weight": {"messages": [U, {**A, "weight": 0.5}]},
    "special_token": {"messages": [{"role": "user", "content": "x <|fim_suffix|> y"}, A]},
    "too_long": {"messages": [{"role": "user", "content": "wort " * 300}, A]},
}
RECORD_LEVEL = {
    "invalid_utf8",
    "invalid_json",
    "unparseable_transcript",
    "missing_conversation_id",
    "conversation_not_contiguous",
}


@pytest.mark.parametrize(("reason", "example"), BAD_EXAMPLES.items(), ids=list(BAD_EXAMPLES))
def test_each_reason_rejects_its_example(reason, example):
    with pytest.raises(ExampleRejected) as info:
        check_example(example, ENC, limit=200)
    assert info.value.reason == reason
    assert info.value.detail


def test_every_reason_is_tested_and_documented():
    assert set(BAD_EXAMPLES) | RECORD_LEVEL == set(REASONS)
    doc = (ROOT / "docs" / "rejections.md").read_text()
    from tasks.preference import PAIR_REASONS

    assert set(re.findall(r"^\| `([a-z_0-9]+)` \|", doc, re.M)) == set(REASONS) | set(PAIR_REASONS)


@pytest.mark.parametrize(
    "example",
    [
        {"messages": [U, A]},
        {
            "messages": [
                {"role": "system", "content": "kurz"},
                U,
                {**A, "weight": 0},
                {"role": "assistant", "content": "ok", "weight": 1},
            ]
        },
        {
            "messages": [
                U,
                {"role": "assistant", "content": None, "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "c1", "content": "{}"},
                A,
            ],
            "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
            "parallel_tool_calls": False,
        },
    ],
)
def test_valid_examples_pass_with_token_counts(example):
    tokens, assistant = check_example(example, ENC, limit=65536)
    assert tokens > assistant > 0


def features(n: int, **overrides) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "split": ["train"] * n,
            "tokens": [100] * n,
            "assistant_tokens": [10] * n,
            "n_user": [1] * n,
            "last_role": ["assistant"] * n,
            "content_sha256": [str(i) for i in range(n)],
        }
    )
    for column, value in overrides.items():
        frame.loc[0, column] = value
    return frame


PARAMS = {"max_tokens": 1000, "min_train_examples": 10, "max_rejected_share": 0.2, "min_validation_examples": 0}
TOTALS = {"train_examples": 12, "validation_examples": 0, "rejected_share": 0.1}


def test_suites_pass_on_a_clean_dataset():
    result = run_suites(features(12), TOTALS, PARAMS)
    assert result.success, result.failed
    assert {"examples", "dataset"} == set(result.suites)


@pytest.mark.parametrize(
    ("frame", "totals", "expected"),
    [
        (features(12, tokens=5000), TOTALS, "examples: expect_column_max_to_be_between(tokens)"),
        (features(12, content_sha256="1"), TOTALS, "examples: expect_column_values_to_be_unique(content_sha256)"),
        (features(12, last_role="user"), TOTALS, "examples: expect_column_values_to_be_in_set(last_role)"),
        (features(12), {**TOTALS, "train_examples": 9}, "dataset: expect_column_values_to_be_between(train_examples)"),
        (
            features(12),
            {**TOTALS, "rejected_share": 0.5},
            "dataset: expect_column_values_to_be_between(rejected_share)",
        ),
    ],
)
def test_suites_name_what_failed(frame, totals, expected):
    result = run_suites(frame, totals, PARAMS)
    assert not result.success
    assert [f for f in result.failed if f.startswith(expected)], result.failed
