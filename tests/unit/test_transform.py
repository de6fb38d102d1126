from __future__ import annotations

import pytest

from tasks.transform import (
    TransformOptions,
    content_hash,
    normalize_example,
    parse_mapping,
    split_for,
)


def normalize(messages, **options):
    example, stats = normalize_example({"messages": messages}, TransformOptions(**options))
    return example["messages"], stats


def test_roles_are_mapped_case_insensitively_with_user_map_first():
    messages, _ = normalize(
        [
            {"role": "HUMAN", "content": "a"},
            {"role": "Agent", "content": "b"},
            {"role": "KUNDE", "content": "c"},
            {"role": "ASSISTANT", "content": "d"},
        ],
        role_map={"kunde": "user"},
    )
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]


def test_unknown_roles_pass_through_for_quality_to_reject():
    messages, _ = normalize([{"role": "narrator", "content": "x"}, {"role": "gpt", "content": "y"}])
    assert messages[0]["role"] == "narrator"


def test_strip_merge_and_trim():
    messages, stats = normalize(
        [
            {"role": "user", "content": "  Hallo  "},
            {"role": "user", "content": "\nnoch da?\n"},
            {"role": "assistant", "content": " Ja. "},
            {"role": "user", "content": "Danke"},
            {"role": "user", "content": "Tschüss"},
        ],
        pii="off",
    )
    assert messages == [{"role": "user", "content": "Hallo\nnoch da?"}, {"role": "assistant", "content": "Ja."}]
    assert stats.trimmed_turns == 2 and stats.merged_turns == 1


def test_tool_turns_are_never_merged():
    call = {"role": "assistant", "tool_calls": [{"id": "1"}]}
    messages, stats = normalize([{"role": "user", "content": "x"}, call, {"role": "assistant", "content": "y"}])
    assert len(messages) == 3 and stats.merged_turns == 0


def test_system_prompt_replace_and_if_missing():
    base = [
        {"role": "system", "content": "LONG PROMPT"},
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": "a"},
    ]
    replaced, _ = normalize(base, system_prompt="short")
    assert replaced[0] == {"role": "system", "content": "short"} and len(replaced) == 3
    kept, _ = normalize(base, system_prompt="short", system_prompt_mode="if-missing")
    assert kept[0]["content"] == "LONG PROMPT"
    added, _ = normalize(base[1:], system_prompt="short", system_prompt_mode="if-missing")
    assert added[0] == {"role": "system", "content": "short"}


def test_pii_off_leaves_text_alone():
    messages, stats = normalize(
        [{"role": "user", "content": "a@b.de"}, {"role": "assistant", "content": "x"}], pii="off"
    )
    assert messages[0]["content"] == "a@b.de" and not stats.pii


def test_content_hash_ignores_case_and_whitespace_but_not_roles():
    a = {"messages": [{"role": "user", "content": "Hallo  Welt"}]}
    b = {"messages": [{"role": "user", "content": "hallo welt"}]}
    c = {"messages": [{"role": "assistant", "content": "hallo welt"}]}
    assert content_hash(a) == content_hash(b) != content_hash(c)


def test_split_is_deterministic_and_close_to_the_fraction():
    digests = [content_hash({"messages": [{"role": "user", "content": str(i)}]}) for i in range(5000)]
    splits = [split_for(d, 0.1) for d in digests]
    assert splits == [split_for(d, 0.1) for d in digests]
    assert 0.08 < splits.count("validation") / len(splits) < 0.12
    assert all(split_for(d, 0.0) == "train" for d in digests)


def test_parse_mapping():
    assert parse_mapping(["USER=user,ASSISTANT=assistant", "Bot=assistant"], option="--role-map") == {
        "USER": "user",
        "ASSISTANT": "assistant",
        "Bot": "assistant",
    }
    with pytest.raises(ValueError, match="--role-map: expected KEY=value"):
        parse_mapping(["USER"], option="--role-map")
