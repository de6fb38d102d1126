from __future__ import annotations

import re

import pandas as pd
import pytest

from ftflow.encodings import get_encoding
from tasks.checks import REASONS, ExampleRejected, check_example
from tasks.features import DriftOptions, drift_changes, feature_summary
from tasks.suites import run_suites
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
            {"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "f", "arguments": {"id": 1}}}]},
        ]
    },
    "too_deep": {  # in a tool call's arguments, a JSON string; in the record itself: test_bad_inputs.py
        "messages": [
            U,
            {"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "f", "arguments": "[" * 65 + "]" * 65}}]},
        ]
    },
    "unknown_tool_call_id": {
        "messages": [
            U,
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "c2", "content": "{}"},
            A,
        ]
    },
    "malformed_tools": {"messages": [U, A], "tools": [{"type": "function"}]},
    "invalid_weight": {"messages": [U, {**A, "weight": 0.5}]},
    "special_token": {"messages": [{"role": "user", "content": "x <|fim_suffix|> y"}, A]},
    "too_long": {"messages": [{"role": "user", "content": "wort " * 300}, A]},
}
# Tested with the readers (test_extract.py) and end to end (test_bad_inputs.py).
RECORD_LEVEL = {
    "invalid_utf8",
    "invalid_json",
    "duplicate_key",
    "truncated_file",
    "corrupt_file",
    "read_error",
    "decompressed_too_large",
    "ragged_row",
    "malformed_row",
    "missing_turn_order",
    "unparseable_transcript",
    "missing_conversation_id",
    "conversation_not_contiguous",
}


@pytest.mark.parametrize(("reason", "example"), BAD_EXAMPLES.items(), ids=list(BAD_EXAMPLES))
def test_each_reason_rejects_its_example(reason, example):
    with pytest.raises(ExampleRejected) as info:
        check_example(example, ENC, limit=200, max_record_depth=64)
    assert info.value.reason == reason
    assert info.value.detail


def test_tool_call_arguments_nest_at_most_the_max_record_depth_given():
    arguments = "[" * 5 + "]" * 5
    example = {"messages": [U, {"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "f",
                                                                                         "arguments": arguments}}]},
                            {"role": "tool", "tool_call_id": "c1", "content": "ok"}, A]}
    check_example(example, ENC, limit=200, max_record_depth=5)
    with pytest.raises(ExampleRejected) as info:
        check_example(example, ENC, limit=200, max_record_depth=4)
    assert info.value.reason == "too_deep" and "max_record_depth (4)" in info.value.detail


def test_every_reason_is_tested_and_documented():
    assert set(BAD_EXAMPLES) | RECORD_LEVEL == set(REASONS)
    doc = (ROOT / "docs" / "rejections.md").read_text()
    from tasks.preference import PAIR_REASONS
    from tasks.provider_rules import RULE_REASONS

    assert set(re.findall(r"^\| `([a-z_0-9]+)` \|", doc, re.M)) == set(REASONS) | set(PAIR_REASONS) | RULE_REASONS


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
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "Wo ist "}, {"type": "text", "text": "sie?"}]}, A]},
    ],
)
def test_valid_examples_pass_with_token_counts(example):
    tokens, assistant = check_example(example, ENC, limit=65536, max_record_depth=64)
    assert tokens > assistant > 0


def features(n: int, **overrides) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "split": ["train"] * n,
            "n_messages": [3] * n,
            "n_user": [1] * n,
            "n_assistant": [1] * n,
            "has_system": [True] * n,
            "tokens": [100] * n,
            "assistant_tokens": [10] * n,
            "pii": [0] * n,
        }
    )
    for column, value in overrides.items():
        frame.loc[0, column] = value
    return frame


PARAMS = {"max_tokens": 1000, "min_train_examples": 10, "max_rejected_share": 0.2, "min_validation_examples": 0}
TOTALS = {"train_examples": 20, "validation_examples": 0, "rejected_share": 0.1, "duplicates_removed": 0}


def test_suites_pass_on_a_clean_dataset_and_skip_drift_without_a_previous_run():
    result = run_suites(features(20), TOTALS, PARAMS)
    assert result.success, result.failed
    assert {"examples", "dataset"} == set(result.suites) and result.drift == {"checked": False, "previous": None}


def test_one_stray_example_without_a_user_turn_is_tolerated():
    # Issue 11: one system+assistant example failed the whole weekly run.
    assert run_suites(features(20, n_user=0), TOTALS, PARAMS).success
    two = features(20)
    two.loc[:1, "n_user"] = 0
    assert run_suites(two, TOTALS, PARAMS).failed == [
        "examples.n_user: 2 of 20 rows (10.0%) outside, expected >= 1 in at least 95% of rows"
    ]


@pytest.mark.parametrize(
    ("totals", "expected"),
    [
        ({**TOTALS, "train_examples": 9}, "dataset.train_examples: 9, expected >= 10"),
        ({**TOTALS, "rejected_share": 0.5}, "dataset.rejected_share: 0.5, expected <= 0.2"),
    ],
)
def test_dataset_suite_names_what_failed(totals, expected):
    assert run_suites(features(20), totals, PARAMS).failed == [expected]


def test_text_parts_count_their_text_only_and_pass_the_same_checks():
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": U["content"]}]}, A]}
    assert (check_example(parts, ENC, limit=200, max_record_depth=64)
            == check_example({"messages": [U, A]}, ENC, limit=200, max_record_depth=64))
    bad = {
        "empty_content": [{"type": "text", "text": "  "}],
        "non_string_content": [{"type": "image_url", "image_url": {"url": "x"}}],
        "unknown_key": [{"type": "text", "text": "x", "mood": "happy"}],
        "special_token": [{"type": "text", "text": "x <|endoftext|>"}],
    }
    for reason, content in bad.items():
        with pytest.raises(ExampleRejected) as info:
            check_example({"messages": [{"role": "user", "content": content}, A]}, ENC, limit=200, max_record_depth=64)
        assert info.value.reason == reason, (reason, info.value.detail)


def test_a_tool_answer_must_follow_its_call():
    answer_first = {
        "messages": [
            U,
            {"role": "tool", "tool_call_id": "c1", "content": "{}"},
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            A,
        ]
    }
    with pytest.raises(ExampleRejected, match="answers no earlier tool call") as info:
        check_example(answer_first, ENC, limit=200, max_record_depth=64)
    assert info.value.reason == "unknown_tool_call_id"


def test_feature_summary_and_drift_changes():
    frame = features(4)
    frame["tokens"] = [100, 200, 300, 400]
    frame.loc[0, "pii"] = 2
    frame.loc[1, "n_messages"] = 5  # a tool call and its result
    summary = feature_summary(frame, {"rejected_share": 0.2, "duplicates_removed": 1})
    assert summary == {"examples": 4, "tokens_p50": 250.0, "tokens_p95": 385.0,
                       "role_mix": {"system": 0.2857, "user": 0.2857, "assistant": 0.2857, "tool": 0.1429},
                       "pii_share": 0.25, "rejected_share": 0.2, "duplicate_share": 0.2}
    previous = {**summary, "tokens_p50": 125.0, "role_mix": {"user": 0.5, "assistant": 0.5}, "pii_share": 0.0}
    assert drift_changes(summary, previous) == {
        "p50_tokens_change": 1.0, "p95_tokens_change": 0.0, "role_mix_shift": 0.4286,
        "pii_share_change": 0.25, "rejected_share_change": 0.0, "duplicate_share_change": 0.0}


def test_drift_suite_fails_by_name_and_passes_within_the_thresholds():
    frame = features(20)
    same = feature_summary(frame, TOTALS)
    assert run_suites(frame, TOTALS, PARAMS, DriftOptions(previous=same)).success
    shifted = {**same, "tokens_p95": 50.0, "duplicate_share": 0.3}
    result = run_suites(frame, TOTALS, PARAMS, DriftOptions(previous=shifted, max_duplicate_share_change=0.5))
    assert result.failed == ["drift.p95_tokens_change: 1, expected <= 0.5"]
    assert result.drift["changes"]["duplicate_share_change"] == 0.3


def test_great_expectations_prints_no_progress_bars_or_temp_directory_notices(capfd, caplog):
    run_suites(features(20), TOTALS, PARAMS)
    out, err = capfd.readouterr()
    logged = caplog.text + out + err
    assert "temporary directory" not in logged and "Calculating Metrics" not in logged and "%|" not in logged
