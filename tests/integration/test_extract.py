from __future__ import annotations

import errno
import gzip
import io
import json
import os
import sqlite3
import uuid
import zlib

import pandas as pd
import pytest
import sqlalchemy as sa

from ftflow.errors import InputError
from tasks.extract import iter_items, resolve_sources
from tasks.readers import Candidate, ExtractOptions, Rejection
from tasks.readers.sql import parse_sql_url
from tasks.readers.transcript import parse_transcript
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


# --- bad input: every record kept or quarantined, never changed --------------------------


def reasons(got) -> list:
    return [(i.loc, i.reason) if isinstance(i, Rejection) else (i.loc, "ok") for i in got]


def test_a_cut_gzip_keeps_every_complete_line_and_rejects_the_rest_once(tmp_path):
    data = b"".join(json.dumps(chat(f"q{i}", f"a{i}")).encode() + b"\n" for i in range(300))
    packed = gzip.compress(data)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(packed[: len(packed) // 2])
    complete = zlib.decompressobj(31).decompress(packed[: len(packed) // 2]).count(b"\n")
    got = items([path])
    assert [r for _, r in reasons(got)] == ["ok"] * complete + ["truncated_file"]
    assert got[-1].loc == f"line {complete + 1}" and got[-1].record  # the incomplete line, as far as it got


def test_a_read_error_is_quarantined_with_its_reason(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "a.jsonl", [chat("q", "a")] * 3)

    class FailingDisk(io.BytesIO):
        def read1(self, size=-1):
            if self.tell():
                raise OSError(errno.EIO, "Input/output error")
            return super().read1(len(self.getvalue()) - 5)  # all but the end of the last line

    monkeypatch.setattr("tasks.readers.compressed.open_binary", lambda p, _limit=None: FailingDisk(p.read_bytes()))
    assert reasons(items([path])) == [("line 1", "ok"), ("line 2", "ok"), ("line 3", "read_error")]


def test_a_gz_that_is_not_gzip_is_one_corrupt_file_rejection(tmp_path):
    path = tmp_path / "plain.jsonl.gz"
    path.write_bytes(b'{"messages": []}\n')
    [only] = items([path])
    assert only.reason == "corrupt_file" and "Not a gzipped file" in only.detail


def test_repeated_keys_and_lone_surrogates_are_rejected_in_lines_and_arrays(tmp_path):
    dup = b'{"messages": [{"role": "user", "content": "a", "content": "b"}]}'
    lone = b'{"messages": [{"role": "user", "content": "x\\ud800"}]}'
    good = json.dumps(chat("q", "a")).encode()
    (tmp_path / "a.jsonl").write_bytes(b"\n".join([dup, lone, good]))
    (tmp_path / "b.json").write_bytes(b"[" + b", ".join([dup, lone, good]) + b"]")
    for name, loc in (("a.jsonl", "line"), ("b.json", "item")):
        assert reasons(items([tmp_path / name])) == [
            (f"{loc} 1", "duplicate_key"), (f"{loc} 2", "invalid_json"), (f"{loc} 3", "ok")
        ]
    # Keys that only look repeated (`"…":` inside a string) are not.
    tricky = {"messages": [{"role": "user", "content": 'he said "content": x'}]}
    assert reasons(items([write_jsonl(tmp_path / "c.jsonl", [tricky])])) == [("line 1", "ok")]


def test_a_byte_order_mark_is_dropped_everywhere(tmp_path):
    bom = b"\xef\xbb\xbf"
    line = json.dumps(chat("q", "a")).encode()
    files = {
        "a.jsonl": bom + line + b"\n",
        "a.json": bom + b"[" + line + b"]",
        "a.txt": bom + b"User: q\nAssistant: a\n",
        "a.csv": bom + b"conversation_id,turn,role,content\nc,1,user,q\nc,2,assistant,a\n",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        [item] = items([tmp_path / name])
        assert isinstance(item, Candidate) and item.example["messages"][0]["content"].strip() == "q", name


def test_wrapped_and_pretty_printed_json(tmp_path):
    records = [chat("q1", "a1"), chat("q2", "a2")]
    (tmp_path / "w.json").write_text(json.dumps({"version": 1, "data": records, "meta": {"n": [1]}}, indent=2))
    (tmp_path / "p.json").write_text("\n".join(json.dumps(r, indent=2) for r in records))
    sharegpt = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    (tmp_path / "s.json").write_text(json.dumps(sharegpt, indent=2))
    assert reasons(items([tmp_path / "w.json"])) == [("item 1", "ok"), ("item 2", "ok")]
    second = len(json.dumps(records[0], indent=2).splitlines()) + 1
    assert reasons(items([tmp_path / "p.json"])) == [("line 1", "ok"), (f"line {second}", "ok")]
    [one] = items([tmp_path / "s.json"])  # `conversations` holding turns: one conversation
    assert len(one.example["messages"]) == 2
    (tmp_path / "x.json").write_text(json.dumps({"name": "settings", "values": [1, 2]}, indent=2))
    with pytest.raises(InputError, match="no conversation in it and no list of records"):
        items([tmp_path / "x.json"])


def test_a_broken_line_at_the_top_does_not_turn_json_lines_into_one_document(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"messages": [\n' + json.dumps(chat("q", "a")) + "\n")
    assert reasons(items([path])) == [("line 1", "invalid_json"), ("line 2", "ok")]


def test_csv_rejects_bad_rows_with_their_conversation_and_keeps_the_rest(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes(
        b"conversation_id,turn,role,content\n"
        b"a,1,user,q\na,2,assistant,r\n"
        b"b,1,user,q,extra\nb,2,assistant,r\n"  # ragged: conversation b goes
        b"c,1,user,caf\xe9\nc,2,assistant,r\n"  # not UTF-8: conversation c goes
        b"d,1,user,q\nd,,assistant,r\n"  # no turn order
        b'e,1,user,"q"x\n'  # not CSV
        b"f,1,user,NA\nf,2,assistant,null\n"  # text, not missing values
    )
    got = sorted(items([path]), key=lambda i: int(i.loc.split()[1]))
    assert reasons(got) == [
        ("row 2", "ok"), ("row 4", "ragged_row"), ("row 6", "invalid_utf8"), ("row 8", "missing_turn_order"),
        ("row 10", "malformed_row"), ("row 11", "ok"),
    ]
    assert got[2].record[0][3] == "caf\ufffd" and "row 6" in got[2].detail
    assert [m["content"] for m in got[-1].example["messages"]] == ["NA", "null"]


def test_a_cut_gzip_csv_keeps_finished_conversations_only(tmp_path):
    rows = "".join(f"c{i},1,user,q{i}\nc{i},2,assistant,a{i}\n" for i in range(200))
    packed = gzip.compress(("conversation_id,turn,role,content\n" + rows).encode())
    path = tmp_path / "m.csv.gz"
    path.write_bytes(packed[: len(packed) // 2])
    got = items([path])
    assert [r for _, r in reasons(got)][-2:] == ["truncated_file", "truncated_file"]
    assert all(len(i.example["messages"]) == 2 for i in got[:-2])


def test_parquet_and_sql_values_that_are_not_text(tmp_path):
    frame = pd.DataFrame({"conversation_id": ["a", "a", "b", "b"], "turn": [1, 2, 1, None],
                          "role": ["user", "assistant", "user", "assistant"], "content": [b"q", b"r", b"q", b"r"]})
    frame.to_parquet(tmp_path / "m.parquet")
    got = items([tmp_path / "m.parquet"])
    assert reasons(got) == [("row 1", "ok"), ("row 3", "missing_turn_order")]
    assert got[0].example["messages"][0]["content"] == "q"
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    assert reasons(items([tmp_path / "bad.parquet"])) == [("row 1", "corrupt_file")]


def test_sources_that_are_not_files(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [chat("q", "a")])
    os.mkfifo(tmp_path / "pipe.jsonl")
    (tmp_path / "gone.jsonl").symlink_to(tmp_path / "deleted.jsonl")
    (tmp_path / "sub.jsonl").mkdir()
    skipped: list[str] = []
    assert resolve_sources([str(tmp_path / "*.jsonl")], skipped) == [tmp_path / "a.jsonl"]
    assert skipped == [
        f"{tmp_path / 'gone.jsonl'}: skipped, a dangling symbolic link",
        f"{tmp_path / 'pipe.jsonl'}: skipped, a FIFO (named pipe), not a regular file",
    ]
    for name, message in (("pipe.jsonl", "a FIFO"), ("sub.jsonl", "a directory, not a file"),
                          ("gone.jsonl", "dangling symbolic link"), ("nope.jsonl", "no such file")):
        with pytest.raises(InputError, match=message):
            resolve_sources([str(tmp_path / name)])


def test_unreadable_files_are_named(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "a.jsonl", [chat("q", "a")])
    monkeypatch.setattr("tasks.extract.os.access", lambda *a: False)
    with pytest.raises(InputError, match="permission denied"):
        resolve_sources([str(path)])


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "--sql-url is not a database URL"),
        ("foodb://u:secret@host/db", "unknown database dialect 'foodb'"),
        ("postgresql+nodriver://u:secret@host/db", "unknown database dialect"),
    ],
)
def test_bad_sql_urls_say_what_is_wrong_without_the_password(url, message):
    with pytest.raises(InputError, match=message) as info:
        parse_sql_url(url)
    assert "secret" not in str(info.value)


def test_json_arrays_over_several_chunks_with_brackets_and_escapes_in_strings(tmp_path, monkeypatch):
    import random

    monkeypatch.setattr("ftflow.reading.READ_CHUNK", 4096)
    rng = random.Random(7)
    pieces = ['}', '{', ']', '[', '\\', '"', '},', '}]', ':', ',', 'ü', '\n', 'x' * 50]
    records = [
        chat("".join(rng.choice(pieces) for _ in range(rng.randrange(1, 40))), json.dumps({"antwort": f"a{i}}}"}))
        for i in range(300)
    ]
    for name, text in (("compact.json", json.dumps(records)), ("pretty.json", json.dumps(records, indent=2))):
        (tmp_path / name).write_text(text)
        assert len(text) > 10 * 4096  # many read chunks, items across their borders
        got = items([tmp_path / name])
        assert [i.example for i in got] == records, name


def test_a_row_without_an_id_inside_a_conversation_takes_the_conversation_with_it(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes(
        b"conversation_id,turn,role,content\n"
        b"a,1,user,q\n,2,assistant,lost\na,3,user,q\na,4,assistant,r\n"  # inside a: a goes
        b"b,1,user,q\nb,2,assistant,r\n"
        b',1,user,"x"y\n'  # between b and c: alone
        b"c,1,user,q\nc,2,assistant,r\n"
    )
    got = sorted(items([path]), key=lambda i: int(i.loc.split()[1]))
    assert reasons(got) == [("row 2", "missing_conversation_id"), ("row 6", "ok"), ("row 8", "malformed_row"),
                            ("row 9", "ok")]
    assert "row 3" in got[0].detail and len(got[0].record) == 4


def test_a_line_over_the_maximum_is_quarantined_as_too_long_with_its_first_bytes(tmp_path):
    good = [json.dumps(chat(f"q{i}", f"a{i}")).encode() for i in range(4)]
    long = b'{"messages": "' + b"x" * 5000 + b'"}'
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"\n".join([good[0], good[1], long, good[2], good[3]]) + b"\n")
    got = items([path], max_record_bytes=4096)
    assert reasons(got) == [("line 1", "ok"), ("line 2", "ok"), ("line 3", "too_long"), ("line 4", "ok"),
                            ("line 5", "ok")]
    rejected = got[2]
    assert rejected.record == long[:256].decode() and f"{len(long) + 1:,} bytes" in rejected.detail


def test_nesting_up_to_max_record_depth_is_kept_and_deeper_is_too_deep(tmp_path):
    """The limit holds for arrays and objects alike, in any field; the record after is still read."""
    def nested(depth):  # depth levels: the record, then arrays and objects in turn under its `extra` key
        value = 1
        for level in range(depth - 1):
            value = [value] if level % 2 else {"k": value}
        return {**chat("q", "a"), "extra": value}

    path = tmp_path / "a.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [nested(8), nested(9), chat("q2", "a2")]) + "\n")
    got = items([path], max_record_depth=8)
    assert reasons(got) == [("line 1", "ok"), ("line 2", "too_deep"), ("line 3", "ok")]
    assert "max_record_depth (8)" in got[1].detail


LONG_INTEGERS = [123456789012345678901234567890, -9223372036854775809, 18446744073709551616, int("9" * 320)]


def test_integers_beyond_64_bits_are_read_exactly_in_lines_and_arrays(tmp_path):
    """orjson alone reads them as floats (the last, beyond a double, it refuses); Python keeps them all."""
    schema = {"type": "object", "properties": {"id": {"type": "integer", "enum": LONG_INTEGERS}}, "n": 1.5}
    record = {**chat("q", "a"), "tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}]}
    (tmp_path / "a.jsonl").write_text(json.dumps(record) + "\n" + json.dumps(chat("q2", "a2")) + "\n")
    (tmp_path / "b.json").write_text(json.dumps([record, chat("q2", "a2")], indent=2))
    for name in ("a.jsonl", "b.json"):
        first, second = items([tmp_path / name])
        assert first.example == record and second.example == chat("q2", "a2")
        enum = first.example["tools"][0]["function"]["parameters"]["properties"]["id"]["enum"]
        assert all(type(n) is int for n in enum)


def test_long_integers_keep_the_strict_rule(tmp_path):
    long = "1" + "0" * 400
    lines = [f'{{"messages": [], "x": {long}, "x": 1}}', f'{{"messages": [], "x": {long}, "y": NaN}}',
             f'{{"messages": [], "x": {long}, "y": 1e999}}', f'{{"messages": [], "x": "\\ud800{long}"}}',
             f'{{"messages": [], "x": {"[" * 9}{long}{"]" * 9}}}']
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n")
    got = items([tmp_path / "a.jsonl"], max_record_depth=8)
    assert [r for _, r in reasons(got)] == ["duplicate_key", "invalid_json", "invalid_json", "invalid_json",
                                            "too_deep"]


def test_a_gz_stops_at_max_decompressed_bytes_and_the_rest_is_one_rejection(tmp_path):
    lines = [json.dumps(chat(f"q{i}", f"a{i}")).encode() + b"\n" for i in range(20000)]  # 2 MiB
    path = tmp_path / "a.jsonl.gz"
    path.write_bytes(gzip.compress(b"".join(lines)))
    limit = 1 << 20
    *kept, last = items([path], max_decompressed_bytes=limit)
    assert {r for _, r in reasons(kept)} == {"ok"} and len(kept) > 5000
    assert reasons([last]) == [(f"line {len(kept) + 1}", "decompressed_too_large")]
    assert sum(len(line) for line in lines[: len(kept)]) <= limit and "1,048,576 bytes" in last.detail
    assert len(items([path], max_decompressed_bytes=len(b"".join(lines)))) == 20000  # exactly at the bound: all


def test_a_gz_of_zeros_is_read_past_as_one_too_long_record(tmp_path):
    """2 MiB of gzip holding 2 GiB of NULs, no newline: one record, quarantined with its length and
    256 bytes; the reading before held the whole line (2.3 GiB) and then wrote it all out again."""
    path = tmp_path / "zeros.jsonl.gz"
    member = gzip.compress(bytes(64 << 20), compresslevel=9)
    path.write_bytes(member * 32)  # 32 gzip members, read as one stream, as gzip itself reads them
    assert path.stat().st_size < 3 << 20
    got = items([path])
    assert reasons(got) == [("line 1", "too_long")]
    assert got[0].record == "\0" * 256 and f"{2 << 30:,} bytes" in got[0].detail


def test_a_transcript_with_a_line_over_the_maximum_is_rejected_by_block(tmp_path):
    path = tmp_path / "chats.txt"
    path.write_bytes(b"User: a\nAssistant: b\n---\nUser: " + b"y" * 3000 + b"\nAssistant: c\n---\nUser: d\nAssistant: e\n")
    got = items([path], max_record_bytes=1024)
    assert reasons(got) == [("line 1", "ok"), ("line 4", "too_long"), ("line 7", "ok")]
