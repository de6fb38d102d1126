from __future__ import annotations

import gzip
import json
import sqlite3
import uuid

import pandas as pd
import pytest
import sqlalchemy as sa

from ftflow.errors import InputError
from tasks.extract import Candidate, ExtractOptions, Rejection, iter_items, parse_transcript, resolve_sources
from tests.conftest import chat, postgres_engine_or_skip, postgres_url, write_jsonl


def items(paths, **options):
    return list(iter_items(paths, ExtractOptions(**options)))


def test_chat_jsonl_keeps_every_openai_field(tmp_path):
    record = {
        "messages": [
            {"role": "user", "content": "hi", "name": "anna"},
            {
                "role": "assistant",
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "{}"},
            {"role": "assistant", "content": "done", "weight": 1},
        ],
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "parallel_tool_calls": False,
    }
    [item] = items([write_jsonl(tmp_path / "a.jsonl", [record])])
    assert isinstance(item, Candidate) and item.example == record and item.loc == "line 1"


def test_bad_lines_are_rejected_with_file_line_and_reason(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"messages": []}\n\n{not json\n{"messages": [{"content": "caf\xe9"}]}\n[1, 2]\n')
    got = items([path])
    assert [type(i).__name__ for i in got] == ["Candidate", "Rejection", "Rejection", "Rejection"]
    assert [(r.loc, r.reason) for r in got[1:]] == [
        ("line 3", "invalid_json"),
        ("line 4", "invalid_utf8"),
        ("line 5", "data_type"),
    ]
    assert all(r.source == str(path) for r in got)


def test_sharegpt_json_array_is_detected_and_streamed(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(
        json.dumps(
            [
                {
                    "system": "Be brief.",
                    "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}],
                },
                {"conversations": []},
            ]
        )
    )
    first, second = items([path])
    assert first.example["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "human", "content": "Hi"},
        {"role": "gpt", "content": "Hello"},
    ]
    assert first.loc == "item 1"
    assert isinstance(second, Rejection) and second.reason == "missing_messages"


def test_truncated_json_array_keeps_what_was_read_and_rejects_the_rest(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('[{"turns": [{"speaker": "user", "text": "a"}]}, {"turns": [')
    first, second = items([path])
    assert isinstance(first, Candidate)
    assert isinstance(second, Rejection) and second.reason == "invalid_json" and second.loc == "item 2"


@pytest.mark.parametrize("key", ["turns", "utterances", "dialog"])
def test_turn_lists_with_speaker_and_text(tmp_path, key):
    record = {key: [{"speaker": "USER", "text": "Hallo"}, {"speaker": "BOT", "text": "Servus"}]}
    [item] = items([write_jsonl(tmp_path / "n.jsonl", [record])])
    assert item.example["messages"] == [{"role": "USER", "content": "Hallo"}, {"role": "BOT", "content": "Servus"}]


def test_explicit_keys_override_detection(tmp_path):
    record = {"chat": [{"who": "kunde", "said": "Hallo", "text": "ignored"}]}
    [item] = items(
        [write_jsonl(tmp_path / "n.jsonl", [record])],
        format="nested",
        turns_key="chat",
        role_key="who",
        content_key="said",
    )
    assert item.example["messages"] == [{"role": "kunde", "content": "Hallo"}]


def test_transcript_prefix_splits_only_at_line_start():
    text = "Human: I told the Assistant: hi\nand more\nAssistant: Sure.\nSystem: x"
    turns = parse_transcript(text, {})
    assert [t["role"] for t in turns] == ["user", "assistant", "system"]
    assert turns[0]["content"] == "I told the Assistant: hi\nand more\n"


def test_custom_speakers_and_unparseable_transcripts():
    assert parse_transcript("Kunde: hallo\nBot: servus", {"Kunde": "user", "Bot": "assistant"})[1] == {
        "role": "assistant",
        "content": "servus",
    }
    with pytest.raises(ValueError, match="no speaker prefix"):
        parse_transcript("just a note", {})
    with pytest.raises(ValueError, match="before the first"):
        parse_transcript("preamble\nUser: hi", {})


def test_transcript_files_and_text_fields(tmp_path):
    txt = tmp_path / "t.txt"
    txt.write_text("User: a\nAssistant: b\n---\nnoise only\n---\nUser: c\nAssistant: d\n")
    got = items([txt])
    assert [(type(i).__name__, i.loc) for i in got] == [
        ("Candidate", "line 1"),
        ("Rejection", "line 4"),
        ("Candidate", "line 6"),
    ]
    assert got[1].reason == "unparseable_transcript"
    broken = tmp_path / "b.txt"
    broken.write_bytes(b"User: caf\xe9\nAssistant: b\n---\nUser: c\nAssistant: d\n")
    assert [(i.loc, getattr(i, "reason", None)) for i in items([broken])] == [("line 1", "invalid_utf8"), ("line 4", None)]
    jl = write_jsonl(tmp_path / "t.jsonl", [{"body": "Human: x\nAssistant: y"}])
    [item] = items([jl], format="transcript", text_key="body")
    assert item.example["messages"][1] == {"role": "assistant", "content": "y"}


def table_rows():
    return pd.DataFrame(
        {
            "conversation_id": ["a", "a", "b", "b", "a"],
            "turn": [2, 1, 1, 2, 3],
            "role": ["assistant", "user", "user", "assistant", "user"],
            "content": ["A1", "U1", "U2", "A2", "late"],
        }
    )


def test_csv_groups_rows_orders_turns_and_rejects_non_contiguous(tmp_path):
    path = tmp_path / "m.csv.gz"
    with gzip.open(path, "wt") as f:
        table_rows().to_csv(f, index=False)
    got = items([path])
    assert got[0].example["messages"] == [{"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"}]
    assert got[0].loc == "row 2"
    assert got[1].example["messages"][0]["content"] == "U2"
    assert isinstance(got[2], Rejection) and got[2].reason == "conversation_not_contiguous" and got[2].loc == "row 6"


def test_parquet_in_small_batches_with_custom_columns(tmp_path):
    frame = table_rows().iloc[:4].rename(columns={"conversation_id": "cid", "content": "text"})
    path = tmp_path / "m.parquet"
    frame.to_parquet(path)
    got = items([path], id_column="cid", content_column="text", batch_size=1)
    assert [len(i.example["messages"]) for i in got] == [2, 2]


def test_missing_table_columns_is_an_input_error(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("id,text\n1,hi\n")
    with pytest.raises(InputError, match="missing column"):
        items([path])


def test_globs_and_missing_paths(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [chat("a", "b")])
    write_jsonl(tmp_path / "b.jsonl", [chat("a", "b")])
    assert [p.name for p in resolve_sources([str(tmp_path / "*.jsonl"), str(tmp_path / "a.jsonl")])] == [
        "a.jsonl",
        "b.jsonl",
    ]
    with pytest.raises(InputError, match="no such file"):
        resolve_sources([str(tmp_path / "nope*.csv")])


def _load_messages(engine: sa.Engine, table: str) -> None:
    table_rows().rename(columns={"conversation_id": "conv"}).to_sql(table, engine, index=False)


def test_sql_on_sqlite_orders_by_conversation_and_turn(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    _load_messages(sa.create_engine(url), "messages")
    got = items([], sql_url=url, query="SELECT * FROM messages;", id_column="conv", batch_size=2)
    assert [len(i.example["messages"]) for i in got] == [3, 2]  # ORDER BY brings "a" together
    assert got[0].source.startswith("sql:sqlite:///")


def test_sql_bad_query_is_an_input_error(tmp_path):
    sqlite3.connect(tmp_path / "db.sqlite").close()
    with pytest.raises(InputError, match="query failed"):
        items([], sql_url=f"sqlite:///{tmp_path / 'db.sqlite'}", query="SELECT * FROM nope")


@pytest.mark.postgres
def test_sql_on_postgres_with_the_same_code():
    engine = postgres_engine_or_skip()
    table = f"ftflow_test_{uuid.uuid4().hex[:8]}"
    _load_messages(engine, table)
    try:
        got = items([], sql_url=postgres_url(), query=f"SELECT * FROM {table}", id_column="conv", batch_size=2)
        assert [[m["content"] for m in i.example["messages"]] for i in got] == [["U1", "A1", "late"], ["U2", "A2"]]
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE {table}"))
