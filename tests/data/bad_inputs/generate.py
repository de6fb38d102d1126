"""Write the bad-input corpus: one folder per kind of bad input, and `cases.json` saying what to expect.

    python tests/data/bad_inputs/generate.py [TARGET_DIR]     # default: next to this script

Each kind holds good records (each with a unique tag in its text, so a test can see that every
one of them was written) and the bad records of that kind. `cases.json` lists, per kind, the
`ftflow prepare` arguments (`{dir}` stands for the kind's folder), the exit code, the tags of
the good records, the rejection reasons with their counts, and for an error exit a part of
the one `error:` line. Random choices (truncation points, garbage bytes, where the bad record
goes) come from one seeded generator, so the corpus is the same on every run.

Files that git cannot hold (a FIFO, a dangling symbolic link) and databases are made by
`make_special(kind_dir, case)` when the tests run.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import random
import sqlite3
import sys
import zlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

SEED = 20261127
GOOD = 12  # OpenAI's minimum is 10 training examples; the rest is margin


class Corpus:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.rng = random.Random(SEED)
        self.cases: list[dict[str, Any]] = []

    # --- good records ---------------------------------------------------------------------

    @staticmethod
    def tags(kind: str, n: int = GOOD, start: int = 0) -> list[str]:
        return [f"{kind}-{i}" for i in range(start, start + n)]

    @staticmethod
    def chat(tag: str) -> dict[str, Any]:
        return {"messages": [{"role": "user", "content": f"Frage {tag}"}, {"role": "assistant", "content": f"Antwort {tag}"}]}

    def lines(self, tags: list[str]) -> list[bytes]:
        return [json.dumps(self.chat(t), ensure_ascii=False).encode() for t in tags]

    @staticmethod
    def rows(tag: str) -> list[list[Any]]:
        return [[tag, 1, "user", f"Frage {tag}"], [tag, 2, "assistant", f"Antwort {tag}"]]

    @staticmethod
    def transcript(tag: str) -> bytes:
        return f"User: Frage {tag}\nAssistant: Antwort {tag}\n".encode()

    # --- cases ---------------------------------------------------------------------------

    def add(
        self,
        kind: str,
        files: dict[str, bytes],
        *,
        good: list[str],
        rejected: dict[str, int] | None = None,
        exit: int = 0,
        message: str | None = None,
        sources: list[str] | None = None,
        args: list[str] | None = None,
        special: str | None = None,
        marks: list[str] | None = None,
        skipped: int = 0,
        verbatim: list[str] | None = None,
    ) -> None:
        folder = self.root / kind
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (folder / name).write_bytes(data)
        self.cases.append(
            {
                "kind": kind,
                "sources": sources if sources is not None else [f"{{dir}}/{name}" for name in files],
                "args": args or [],
                "exit": exit,
                "good": good,
                "rejected": rejected or {},
                "message": message,
                "special": special,
                "marks": marks or [],
                "skipped": skipped,
                "verbatim": verbatim or [],
            }
        )

    def with_bad_lines(self, kind: str, bad: list[bytes], reason: str, suffix: str = ".jsonl",
                       prefix: bytes = b"", end: bytes = b"\n") -> None:
        """JSON Lines: the good records with the bad lines put in at seeded places."""
        tags = self.tags(kind)
        lines = self.lines(tags)
        for line in bad:
            lines.insert(self.rng.randrange(len(lines) + 1), line)
        self.add(kind, {f"data{suffix}": prefix + end.join(lines) + end}, good=tags,
                 rejected={reason: len(bad)} if bad else {})

    def csv_case(self, kind: str, bad_rows: list[bytes], rejected: dict[str, int], *,
                 header: bytes = b"conversation_id,turn,role,content", good_start: int = 0) -> None:
        tags = self.tags(kind)
        out = io.StringIO()
        for tag in tags:
            for row in self.rows(tag):
                out.write(",".join(str(v) for v in row) + "\n")
        body = out.getvalue().encode().splitlines(keepends=True)
        at = 2 * self.rng.randrange(len(tags) + 1)  # between conversations
        body[at:at] = [row + b"\n" for row in bad_rows]
        self.add(kind, {"messages.csv": header + b"\n" + b"".join(body)}, good=tags, rejected=rejected)

    def table_case(self, kind: str, bad: list[list[Any]], rejected: dict[str, int], **kwargs: Any) -> None:
        """Parquet: the good conversations and the bad rows, as message-per-row."""
        tags = self.tags(kind)
        rows = [row for tag in tags for row in self.rows(tag)] + bad
        columns = list(zip(*rows, strict=True))
        types = kwargs.pop("types", [pa.string(), pa.int64(), pa.string(), pa.string()])
        table = pa.table(
            {name: pa.array(list(values), type=t) for name, values, t in
             zip(["conversation_id", "turn", "role", "content"], columns, types, strict=True)}
        )
        sink = io.BytesIO()
        pq.write_table(table, sink)
        self.add(kind, {"messages.parquet": sink.getvalue()}, good=tags, rejected=rejected, **kwargs)


def truncated_gzip(data: bytes, rng: random.Random) -> tuple[bytes, bytes]:
    """A gzip stream cut at a seeded point, and the bytes it still decompresses to."""
    packed = gzip.compress(data, mtime=0)
    cut = rng.randrange(len(packed) // 3, 2 * len(packed) // 3)
    return packed[:cut], zlib.decompressobj(31).decompress(packed[:cut])


def build(root: Path) -> list[dict[str, Any]]:
    c = Corpus(root)
    rng = c.rng

    # --- JSON Lines -----------------------------------------------------------------------
    c.with_bad_lines("jsonl_invalid_json", [b'{"messages": [{"role": "user", "content": "x"}'], "invalid_json")
    c.with_bad_lines("jsonl_invalid_utf8", [b'{"messages": [{"role": "user", "content": "caf\xe9"}]}'], "invalid_utf8")
    c.with_bad_lines(
        "jsonl_lone_surrogate",
        [b'{"messages": [{"role": "user", "content": "a\\ud800b"}, {"role": "assistant", "content": "c"}]}'],
        "invalid_json",
    )
    c.with_bad_lines(
        "jsonl_duplicate_key",
        [b'{"messages": [{"role": "user", "content": "a", "content": "b"}, {"role": "assistant", "content": "c"}]}'],
        "duplicate_key",
    )
    c.with_bad_lines("jsonl_bom", [], "", prefix=b"\xef\xbb\xbf")
    c.with_bad_lines("jsonl_crlf", [], "", end=b"\r\n\r\n")
    c.with_bad_lines("jsonl_not_an_object", [b"[1, 2, 3]"], "data_type")
    c.with_bad_lines("jsonl_no_messages", [b'{"prompt": "a", "completion": "b"}'], "missing_messages")
    c.with_bad_lines("jsonl_control_character", [b'{"messages": [{"role": "user", "content": "a\x00b"}]}'],
                     "invalid_json")
    c.with_bad_lines(
        "jsonl_unknown_tool_call_id",
        [json.dumps({"messages": [
            {"role": "user", "content": "Wo ist sie?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "track", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_b", "content": "{}"},
            {"role": "assistant", "content": "Unterwegs."}]}).encode()],
        "unknown_tool_call_id",
    )
    c.with_bad_lines("jsonl_special_token", [json.dumps(c.chat("x <|endoftext|>")).encode()], "special_token")
    c.with_bad_lines("jsonl_unknown_role",
                     [b'{"messages": [{"role": "narrator", "content": "a"}, {"role": "assistant", "content": "b"}]}'],
                     "unknown_role")
    c.with_bad_lines("jsonl_number_content",
                     [b'{"messages": [{"role": "user", "content": 42}, {"role": "assistant", "content": "b"}]}'],
                     "non_string_content")
    c.with_bad_lines("jsonl_image_part", [json.dumps({"messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
        {"role": "assistant", "content": "b"}]}).encode()], "non_string_content")
    c.with_bad_lines("jsonl_empty_text_part", [json.dumps({"messages": [
        {"role": "user", "content": [{"type": "text", "text": "  "}]},
        {"role": "assistant", "content": "b"}]}).encode()], "empty_content")
    tags = c.tags("jsonl_text_parts")
    parts = [json.dumps({"messages": [
        {"role": "user", "content": [{"type": "text", "text": "Frage "}, {"type": "text", "text": t}]},
        {"role": "assistant", "content": [{"type": "text", "text": f"Antwort {t}"}]}]}) for t in tags]
    c.add("jsonl_text_parts", {"data.jsonl": ("\n".join(parts) + "\n").encode()}, good=tags)
    c.with_bad_lines("jsonl_no_final_newline", [], "", end=b"\n")
    (root / "jsonl_no_final_newline" / "data.jsonl").write_bytes(
        (root / "jsonl_no_final_newline" / "data.jsonl").read_bytes().rstrip(b"\n"))
    tags = c.tags("jsonl_pretty_printed")
    c.add("jsonl_pretty_printed",
          {"data.jsonl": "\n".join(json.dumps(c.chat(t), indent=2) for t in tags).encode()}, good=tags)
    tags = c.tags("jsonl_empty_file")
    c.add("jsonl_empty_file", {"empty.jsonl": b"", "data.jsonl": b"\n".join(c.lines(tags)) + b"\n"}, good=tags)

    # --- JSON arrays and documents --------------------------------------------------------
    def array_case(kind: str, bad: list[bytes], rejected: dict[str, int], *, prefix: bytes = b"",
                   after: bytes = b"", cut: bool = False) -> None:
        tags = c.tags(kind)
        items = c.lines(tags)
        for raw in bad:
            items.insert(rng.randrange(len(items) + 1), raw)
        data = prefix + b"[\n" + b",\n".join(items) + b"\n]" + after
        good = tags
        if cut:  # the file ends inside the last item
            data = data[: data.rindex(b"Antwort")]
            good = tags[:-1] if items[-1] == c.lines(tags[-1:])[0] else tags
        c.add(kind, {"data.json": data}, good=good, rejected=rejected)

    array_case("json_array_lone_surrogate",
               [b'{"messages": [{"role": "user", "content": "\\udc00"}, {"role": "assistant", "content": "b"}]}'],
               {"invalid_json": 1})
    array_case("json_array_duplicate_key", [b'{"messages": [], "messages": []}'], {"duplicate_key": 1})
    array_case("json_array_bom", [], {}, prefix=b"\xef\xbb\xbf")
    array_case("json_array_bad_item", [b'{"messages": tru}'], {"invalid_json": 1})
    array_case("json_array_invalid_utf8", [b'{"messages": [{"role": "user", "content": "\xff"}]}'],
               {"invalid_utf8": 1})
    array_case("json_array_truncated", [], {"invalid_json": 1}, cut=True)
    array_case("json_array_data_after_end", [], {"invalid_json": 1}, after=b"\n[1, 2]\n")
    tags = c.tags("json_wrapped_data")
    c.add("json_wrapped_data", {"export.json": json.dumps(
        {"version": 3, "data": [c.chat(t) for t in tags], "exported_at": "2026-11-27"}, indent=2).encode()}, good=tags)
    tags = c.tags("json_wrapped_sharegpt")
    c.add("json_wrapped_sharegpt", {"export.json": json.dumps({"conversations": [
        {"conversations": [{"from": "human", "value": f"Frage {t}"}, {"from": "gpt", "value": f"Antwort {t}"}]}
        for t in tags]}, indent=2).encode()}, good=tags)
    tags = c.tags("json_wrapped_compact")
    c.add("json_wrapped_compact", {"export.json": json.dumps({"records": [c.chat(t) for t in tags]}).encode()},
          good=tags)
    c.add("json_object_without_records", {"settings.json": json.dumps({"name": "x", "version": 2}, indent=2).encode()},
          good=[], exit=2, message="one JSON object with no conversation in it")

    # --- transcripts ----------------------------------------------------------------------
    def transcript_case(kind: str, bad: list[bytes], rejected: dict[str, int], prefix: bytes = b"") -> None:
        tags = c.tags(kind)
        blocks = [c.transcript(t) for t in tags]
        for raw in bad:
            blocks.insert(rng.randrange(len(blocks) + 1), raw)
        c.add(kind, {"chats.txt": prefix + b"---\n".join(blocks)}, good=tags, rejected=rejected)

    transcript_case("transcript_bom", [], {}, prefix=b"\xef\xbb\xbf")
    transcript_case("transcript_no_speaker", [b"Notiz ohne Sprecher\n"], {"unparseable_transcript": 1})
    transcript_case("transcript_text_before_speaker", [b"Vorspann\nUser: a\nAssistant: b\n"],
                    {"unparseable_transcript": 1})
    transcript_case("transcript_invalid_utf8", [b"User: Gr\xfc\xdfe\nAssistant: b\n"], {"invalid_utf8": 1})

    # --- gzip -----------------------------------------------------------------------------
    tags = c.tags("gz_truncated_jsonl", 60)
    cut, seen = truncated_gzip(b"\n".join(c.lines(tags)) + b"\n", rng)
    good = [t for t, line in zip(tags, c.lines(tags), strict=True) if line + b"\n" in seen]
    c.add("gz_truncated_jsonl", {"data.jsonl.gz": cut}, good=good, rejected={"truncated_file": 1})
    tags = c.tags("gz_truncated_transcript", 60)
    cut, seen = truncated_gzip(b"---\n".join(c.transcript(t) for t in tags), rng)
    good = [t for t in tags if c.transcript(t) + b"---\n" in seen]
    c.add("gz_truncated_transcript", {"chats.txt.gz": cut}, good=good, rejected={"truncated_file": 1})
    tags = c.tags("gz_truncated_csv", 60)
    csv_text = "conversation_id,turn,role,content\n" + "".join(
        ",".join(map(str, row)) + "\n" for t in tags for row in c.rows(t))
    cut, seen = truncated_gzip(csv_text.encode(), rng)
    # A conversation is complete when the next one has started before the cut.
    good = [t for t, nxt in zip(tags, tags[1:], strict=False) if f"\n{nxt},1,".encode() in seen]
    c.add("gz_truncated_csv", {"messages.csv.gz": cut}, good=good, rejected={"truncated_file": 2})
    tags = c.tags("gz_truncated_json_array", 300)
    cut, seen = truncated_gzip(b"[" + b",\n".join(c.lines(tags)) + b"]", rng)
    good = [t for t, line in zip(tags, c.lines(tags), strict=True) if line in seen]
    c.add("gz_truncated_json_array", {"data.json.gz": cut}, good=good, rejected={"truncated_file": 1})
    tags = c.tags("gz_not_gzip")
    c.add("gz_not_gzip", {"plain.jsonl.gz": b"\n".join(c.lines(c.tags("plain", 2))) + b"\n",
                          "data.jsonl": b"\n".join(c.lines(tags)) + b"\n"}, good=tags, rejected={"corrupt_file": 1})
    tags = c.tags("gz_bad_checksum")
    packed = bytearray(gzip.compress(b"\n".join(c.lines(tags)) + b"\n", mtime=0))
    packed[-8] ^= 0xFF  # the CRC32 in the trailer
    c.add("gz_bad_checksum", {"data.jsonl.gz": bytes(packed)}, good=tags, rejected={"corrupt_file": 1})
    # A line over max_record_bytes (16 MiB by default): NULs, which gzip packs a thousandfold.
    huge = b"\0" * ((16 << 20) + 1)
    tags = c.tags("gz_too_long_line")
    lines = c.lines(tags)
    c.add("gz_too_long_line", {"data.jsonl.gz": gzip.compress(b"\n".join([*lines[:6], huge, *lines[6:]]) + b"\n",
                                                                mtime=0)}, good=tags, rejected={"too_long": 1})
    tags = c.tags("gz_too_long_transcript")
    blocks = [c.transcript(t) for t in tags]
    blocks.insert(3, huge + b"\nUser: a\nAssistant: x\n")  # read whole, it was text before the first speaker
    c.add("gz_too_long_transcript", {"chats.txt.gz": gzip.compress(b"---\n".join(blocks), mtime=0)}, good=tags,
          rejected={"too_long": 1})

    # --- CSV ------------------------------------------------------------------------------
    c.csv_case("csv_ragged_row", [b"r1,1,user,Frage,extra", b"r1,2,assistant,Antwort"], {"ragged_row": 1})
    c.csv_case("csv_short_row", [b"s1,1,user", b"s1,2,assistant,Antwort"], {"ragged_row": 1})
    c.csv_case("csv_invalid_utf8", [b"u1,1,user,Gr\xfc\xdfe", b"u1,2,assistant,Antwort"], {"invalid_utf8": 1})
    c.csv_case("csv_missing_turn_order", [b"m1,1,user,Frage", b"m1,,assistant,Antwort"], {"missing_turn_order": 1})
    c.csv_case("csv_missing_conversation_id", [b",1,user,verloren"], {"missing_conversation_id": 1})
    c.csv_case("csv_stray_quote", [b'q1,1,user,"Frage"x'], {"malformed_row": 1})
    c.csv_case("csv_bom", [], {}, header=b"\xef\xbb\xbfconversation_id,turn,role,content")
    tags = c.tags("csv_unclosed_quote")
    body = "".join(",".join(map(str, row)) + "\n" for t in tags for row in c.rows(t))
    c.add("csv_unclosed_quote", {"messages.csv": (
        "conversation_id,turn,role,content\n" + body + 'z1,1,user,"offen\nz1,2,assistant,Antwort\n').encode()},
        good=tags, rejected={"malformed_row": 1})
    c.add("csv_missing_columns", {"messages.csv": b"id,text\n1,hallo\n"}, good=[], exit=2, message="missing column")

    # --- Parquet --------------------------------------------------------------------------
    c.table_case("parquet_null_turn", [["p1", 1, "user", "Frage"], ["p1", None, "assistant", "Antwort"]],
                 {"missing_turn_order": 1})
    c.table_case("parquet_null_conversation_id", [[None, 1, "user", "verloren"]], {"missing_conversation_id": 1})
    c.table_case("parquet_binary_content", [["b1", 1, "user", b"\x00\xff"], ["b1", 2, "assistant", b"ok"]],
                 {"invalid_utf8": 1}, types=[pa.string(), pa.int64(), pa.string(), pa.binary()])
    tags = c.tags("parquet_corrupt")
    c.add("parquet_corrupt", {"broken.parquet": b"PAR1" + rng.randbytes(200),
                              "data.jsonl": b"\n".join(c.lines(tags)) + b"\n"}, good=tags, rejected={"corrupt_file": 1})
    # A Parquet file whose footer is sound but whose content column's data page is overwritten.
    sink = io.BytesIO()
    rows = [row for tag in c.tags("page", 2) for row in c.rows(tag)]
    pq.write_table(pa.table({name: list(values) for name, values in
                             zip(["conversation_id", "turn", "role", "content"], zip(*rows, strict=True), strict=True)}), sink)
    page = pq.ParquetFile(io.BytesIO(sink.getvalue())).metadata.row_group(0).column(3).data_page_offset
    broken = bytearray(sink.getvalue())
    broken[page : page + 12] = bytes(b ^ 0x5A for b in broken[page : page + 12])
    tags = c.tags("parquet_corrupt_page")
    c.add("parquet_corrupt_page", {"broken.parquet": bytes(broken), "data.jsonl": b"\n".join(c.lines(tags)) + b"\n"},
          good=tags, rejected={"corrupt_file": 1})

    # --- SQL (the database is made by make_special) ----------------------------------------
    sql = ["--sql-url", "sqlite:///{dir}/messages.sqlite", "--query", "SELECT * FROM messages"]
    c.add("sqlite_null_turn", {}, sources=[], args=sql, good=c.tags("sqlite_null_turn"),
          rejected={"missing_turn_order": 1}, special="sqlite")
    c.add("sqlite_blob_content", {}, sources=[], args=sql, good=c.tags("sqlite_blob_content"),
          rejected={"invalid_utf8": 1}, special="sqlite")
    c.add("postgres_null_turn", {}, sources=[], args=["--sql-url", "{postgres_url}", "--query",
                                                       "SELECT * FROM {table}"],
          good=c.tags("postgres_null_turn"), rejected={"missing_turn_order": 1}, special="postgres",
          marks=["postgres"])
    c.add("sql_url_unknown_dialect", {}, sources=[], args=["--sql-url", "foodb://u:secret@host/db", "--query", "SELECT 1"],
          good=[], exit=2, message="unknown database dialect 'foodb'")
    c.add("sql_url_not_a_url", {}, sources=[], args=["--sql-url", "not a url", "--query", "SELECT 1"],
          good=[], exit=2, message="--sql-url is not a database URL")
    c.add("sql_query_fails", {}, sources=[], args=[*sql[:3], "SELECT * FROM nowhere"], good=[], exit=2,
          message="query failed", special="sqlite")

    # --- paths and options ----------------------------------------------------------------
    c.add("source_is_directory", {}, sources=["{dir}"], good=[], exit=2, message="a directory, not a file")
    c.add("source_is_fifo", {}, sources=["{dir}/pipe.jsonl"], good=[], exit=2, message="a FIFO", special="fifo")
    tags = c.tags("glob_skips_fifo_and_dangling_link")
    c.add("glob_skips_fifo_and_dangling_link", {"data.jsonl": b"\n".join(c.lines(tags)) + b"\n"},
          sources=["{dir}/*.jsonl"], good=tags, special="fifo+link", skipped=2)
    c.add("missing_file", {}, sources=["{dir}/nothing.jsonl"], good=[], exit=2, message="no such file")
    tags = c.tags("out_is_a_file")
    c.add("out_is_a_file", {"data.jsonl": b"\n".join(c.lines(tags)) + b"\n"}, good=[], exit=2,
          args=["--out", "{dir}/data.jsonl"], message="is an existing file, not a folder")
    # /sys is read-only (for root too) or not writable by the user: a read-only mount either way
    c.add("out_read_only", {"data.jsonl": b"\n".join(c.lines(c.tags("out_read_only"))) + b"\n"}, good=[], exit=2,
          args=["--out", "/sys/ftflow-out"], message="/sys/ftflow-out")
    c.add("bad_setting", {"data.jsonl": b"\n".join(c.lines(c.tags("bad_setting"))) + b"\n"}, good=[], exit=2,
          args=["--validation-fraction", "1.5"], message="validation_fraction (from --validation-fraction)")
    c.with_bad_lines("mostly_bad", [b"{oops"] * 8, "invalid_json")
    c.cases[-1].update(exit=3, message="dataset.rejected_share: 0.4, expected <= 0.25")

    # --- hostile JSON: nesting, and tool arguments held to the record's own rule ---------------
    def with_tool_call(arguments: str) -> bytes:
        return json.dumps({"messages": [
            {"role": "user", "content": "Wo ist sie?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "track", "arguments": arguments}}]},
            {"role": "tool", "tool_call_id": "call_a", "content": "{}"},
            {"role": "assistant", "content": "Unterwegs."}]}).encode()

    deep = "[" * 300 + "]" * 300
    c.with_bad_lines("jsonl_too_deep", [
        json.dumps(c.chat("deep")).encode()[:-1] + b', "extra": ' + deep.encode() + b"}",  # an unknown key
        with_tool_call('{"path": ' + deep + "}"),
    ], "too_deep")
    c.with_bad_lines("jsonl_tool_arguments_not_strict",
                     [with_tool_call(a) for a in ('{"x": NaN}', '{"x": Infinity}', '{"x": 1e999}')], "invalid_json")
    c.with_bad_lines("jsonl_tool_arguments_duplicate_key", [with_tool_call('{"x": 1, "x": 2}')], "duplicate_key")

    # --- numbers as written: integers beyond 64 bits, which orjson alone reads as floats ---------
    long_numbers = [123456789012345678901234567890, -98765432109876543210987654321, int("9" * 320)]  # the last
    # is beyond a double, too

    def with_tools(record: dict[str, Any], number: int) -> dict[str, Any]:
        schema = {"type": "object", "properties": {"id": {"type": "integer", "maximum": number}}}
        return {**record, "tools": [{"type": "function", "function": {"name": "track", "parameters": schema}}]}

    tags = c.tags("jsonl_long_integers")
    records = [c.chat(t) for t in tags]
    for i, number in enumerate(long_numbers):
        records[3 * i] = with_tools(records[3 * i], number)
    c.add("jsonl_long_integers", {"data.jsonl": b"".join(json.dumps(r).encode() + b"\n" for r in records)}, good=tags,
          verbatim=[str(n) for n in long_numbers])

    # --- preference pairs (DPO) read by the same JSON rule as chat records ----------------------
    dpo = ["--method", "dpo", "--model", "gpt-4.1-mini-2025-04-14"]
    not_preferred = "Dazu kann ich leider gar nichts sagen, bitte wende dich an den Kundendienst deiner Filiale."

    def pair(tag: str) -> dict[str, Any]:  # the preferred answer is the shorter: no length bias
        return {"input": {"messages": [{"role": "user", "content": f"Frage {tag}"}]},
                "preferred_output": [{"role": "assistant", "content": f"Antwort {tag}"}],
                "non_preferred_output": [{"role": "assistant", "content": not_preferred}]}

    def pair_lines(kind: str, bad: list[bytes]) -> tuple[list[str], list[bytes]]:
        tags = c.tags(kind)
        lines = [json.dumps(pair(t)).encode() for t in tags]
        for line in bad:
            lines.insert(rng.randrange(len(lines) + 1), line)
        return tags, lines

    def pair_with(extra: bytes) -> bytes:  # a pair whose input holds `"x": <extra>`
        return json.dumps(pair("bad")).encode().replace(b'{"messages"', b'{"x": ' + extra + b', "messages"', 1)

    tags, lines = pair_lines("dpo_strict_json", [
        pair_with(b'{"a": 1, "a": 2}'), pair_with(b"NaN"), pair_with(b"1e999"), pair_with(deep.encode())])
    for i, number in enumerate(long_numbers):
        lines[lines.index(json.dumps(pair(tags[3 * i])).encode())] = json.dumps(
            {**pair(tags[3 * i]), "input": with_tools(pair(tags[3 * i])["input"], number)}).encode()
    c.add("dpo_strict_json", {"pairs.jsonl": b"\n".join(lines) + b"\n"}, good=tags, args=dpo,
          rejected={"duplicate_key": 1, "invalid_json": 2, "too_deep": 1}, verbatim=[str(n) for n in long_numbers])
    tags, lines = pair_lines("dpo_too_long_line", [huge])
    c.add("dpo_too_long_line", {"pairs.jsonl.gz": gzip.compress(b"\n".join(lines) + b"\n", mtime=0)}, good=tags,
          args=dpo, rejected={"too_long": 1})
    tags = c.tags("dpo_rated_messages_not_strict")
    rows = [[t, json.dumps([{"role": "user", "content": f"Frage {t}"}]), answer, rating]
            for t in tags for answer, rating in ((f"Antwort {t}", 1), (not_preferred, 0))]
    rows += [["x", '[{"role": "user", "content": "a", "content": "b"}]', answer, rating]
             for answer, rating in (("Ja.", 1), ("Nein, leider nicht.", 0))]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([["conversation_id", "messages", "answer", "rating"], *rows])
    c.add("dpo_rated_messages_not_strict", {"rated.csv": out.getvalue().encode()}, good=tags, args=dpo,
          rejected={"duplicate_key": 2})

    for case in c.cases:
        assert case["exit"] != 0 or len(case["good"]) >= 10, case["kind"]  # else the train-size gate fails
    (root / "cases.json").write_text(json.dumps(c.cases, indent=1, ensure_ascii=False) + "\n")
    return c.cases


def sql_rows(case: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The message rows of a SQL case: its good conversations and its bad one."""
    rows = [tuple(row) for tag in case["good"] for row in Corpus.rows(tag)]
    if "null_turn" in case["kind"]:
        rows += [("x1", 1, "user", "Frage"), ("x1", None, "assistant", "Antwort")]
    elif "blob" in case["kind"]:
        rows += [("x2", 1, "user", b"\x00\xff"), ("x2", 2, "assistant", "Antwort")]
    return rows


def make_special(folder: Path, case: dict[str, Any]) -> None:
    """What git cannot hold: FIFOs, a dangling link, the SQLite database of a SQL case."""
    special = case["special"] or ""
    if "fifo" in special:
        os.mkfifo(folder / "pipe.jsonl")
    if "link" in special:
        (folder / "gone.jsonl").symlink_to(folder / "deleted.jsonl")
    if special == "sqlite":
        with sqlite3.connect(folder / "messages.sqlite") as db:
            db.execute("CREATE TABLE messages (conversation_id TEXT, turn INTEGER, role TEXT, content)")
            db.executemany("INSERT INTO messages VALUES (?, ?, ?, ?)", sql_rows(case))


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    print(f"{len(build(target))} kinds written to {target}")
