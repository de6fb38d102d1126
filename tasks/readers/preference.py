"""Preference files (DPO): each record as written, for tasks/preference.py to shape into pairs.

JSON Lines line by line and JSON arrays item by item, by the chat readers (tasks/readers/jsonl.py)
and so by their rule: strict JSON, no key twice, at most `max_record_depth` levels, lines up to
`max_record_bytes`, `.gz` up to `max_decompressed_bytes`. CSV row by row as the chat tables
are read, empty cells left out.
Each record is one `Candidate` whose `example` is the record itself; one that cannot be read is
a `Rejection`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ftflow.reading import JsonRejected, strict_loads
from tasks.readers import Candidate, ExtractOptions, Item, RecordRejected, Rejection
from tasks.readers.compressed import first_lines
from tasks.readers.jsonl import read_json_array, read_json_lines
from tasks.readers.table import RowProblem, csv_reader, csv_rows, json_safe


def read_preference_file(path: Path, options: ExtractOptions) -> Iterator[Item]:
    """One item per JSON line, JSON array item (a `.json` file holding an array) or CSV row."""
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".csv"):
        return _csv_records(path, options)
    head = first_lines(path, 1)
    if name.endswith(".json") and head and head[0].lstrip().startswith(b"["):
        return read_json_array(path, options, shape=as_written)
    return read_json_lines(path, options, shape=as_written)


def as_written(record: Any, options: ExtractOptions) -> Any:
    """The record itself; a conversation given as JSON text (a rated row's `messages` cell) decoded
    by the rule the record was read by."""
    if isinstance(record, dict) and isinstance(record.get("messages"), str):
        try:
            return {**record, "messages": strict_loads(record["messages"], options.max_record_depth)}
        except JsonRejected as exc:
            raise RecordRejected(exc.reason, f"`messages`: {exc.detail}") from None
    return record


def _csv_records(path: Path, options: ExtractOptions) -> Iterator[Item]:
    """Rows by the chat tables' CSV reader (tasks/readers/table.py), so by their rule: one row
    not valid CSV, ragged or not UTF-8 is rejected alone; a read fault rejects the rest."""
    source = str(path)
    with csv_reader(path, options) as (reader, header):
        if isinstance(header, Rejection):
            yield header
            return
        for loc, row in csv_rows(reader, header):
            if isinstance(row, RowProblem):
                yield Rejection(source, loc, row.reason, row.detail, json_safe(row.record))
                continue
            record = {k: v for k, v in row.items() if v is not None}
            try:
                yield Candidate(source, loc, as_written(record, options))
            except RecordRejected as exc:
                yield Rejection(source, loc, exc.reason, exc.detail, record)
