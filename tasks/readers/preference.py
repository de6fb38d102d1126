"""Preference files (DPO): each record as written, for tasks/preference.py to shape into pairs.

JSON Lines line by line, a JSON array item by item, CSV row by row (empty cells left out).
Each record is one `Candidate` whose `example` is the record itself; one that cannot be read
is a `Rejection`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import orjson

from ftflow.jsonl import open_binary
from tasks.readers import Candidate, ExtractOptions, Item, Rejection


def read_preference_file(path: Path, options: ExtractOptions) -> Iterator[Item]:
    """One item per JSON line, JSON array item or CSV row."""
    source = str(path)
    name = path.name.lower().removesuffix(".gz")
    with open_binary(path) as f:
        if name.endswith(".csv"):
            text = io.TextIOWrapper(f, encoding="utf-8-sig", newline="")
            # Data rows are numbered from 2: the header is row 1, as a spreadsheet shows it.
            for number, row in enumerate(csv.DictReader(text), 2):
                yield Candidate(source, f"row {number}", {k: v for k, v in row.items() if v not in (None, "")})
            return
        data = f.read() if name.endswith(".json") else None
        if data is not None and data.lstrip().startswith(b"["):
            try:
                items = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                yield Rejection(source, "item 1", "invalid_json", f"{exc}; the file is unreadable")
                return
            yield from (Candidate(source, f"item {i}", item) for i, item in enumerate(items, 1))
            return
        lines = data.splitlines(keepends=True) if data is not None else f
        for number, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            try:
                yield Candidate(source, f"line {number}", orjson.loads(raw))
            except UnicodeDecodeError as exc:
                yield Rejection(source, f"line {number}", "invalid_utf8", str(exc), raw.decode("utf-8", "replace"))
            except orjson.JSONDecodeError as exc:
                reason = "invalid_utf8" if "utf-8" in str(exc).lower() else "invalid_json"
                yield Rejection(source, f"line {number}", reason, str(exc), raw.decode("utf-8", "replace").rstrip())
