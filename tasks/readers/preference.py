"""Preference files (DPO): each record as written, for tasks/preference.py to shape into pairs.

JSON Lines line by line and JSON arrays item by item, by the chat readers (tasks/readers/jsonl.py)
and so by their rule: strict JSON, no key twice, at most `max_record_depth` levels, lines up to
`max_record_bytes`, `.gz` up to `max_decompressed_bytes`. CSV row by row, empty cells left out.
Each record is one `Candidate` whose `example` is the record itself; one that cannot be read is
a `Rejection`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ftflow.reading import JsonRejected, strict_loads
from tasks.readers import Candidate, ExtractOptions, Item, RecordRejected, Rejection
from tasks.readers.compressed import first_lines, open_source
from tasks.readers.jsonl import read_json_array, read_json_lines


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
    source = str(path)
    with open_source(path, options) as f:
        text = io.TextIOWrapper(f, encoding="utf-8-sig", newline="")
        # Data rows are numbered from 2: the header is row 1, as a spreadsheet shows it.
        for number, row in enumerate(csv.DictReader(text), 2):
            record = {k: v for k, v in row.items() if v not in (None, "")}
            try:
                yield Candidate(source, f"row {number}", as_written(record, options))
            except RecordRejected as exc:
                yield Rejection(source, f"row {number}", exc.reason, exc.detail, record)
