"""Readers: one module per source kind, each behind the same interface (`Reader`).

A reader is given a source (a file's path) and the `ExtractOptions`, and yields one item per
record read, in the order of the source: a `Candidate` (the record, ready for the next stage)
or a `Rejection` (its source, location and reason). Every record becomes exactly one item;
nothing is loaded whole; a file that is cut short or fails to read keeps every complete record
before the fault, and the rest is one rejection with the reason (`truncated_file`,
`corrupt_file`, `read_error`, `decompressed_too_large`).

- `jsonl`: JSON Lines, JSON arrays and documents (pretty-printed or wrapped), record by record;
- `nested`: records whose turns sit in a list of dicts (ShareGPT, turns, utterances, dialog);
- `transcript`: plain text with speaker prefixes;
- `table`: message-per-row CSV and Parquet, rows grouped by conversation;
- `sql`: the same, from a SQLAlchemy URL and query (its source is in the options, not a path);
- `preference`: preference files (DPO pairs or rated answers), each record as written;
- `compressed`: what every file reader reads through: `.gz` looked through with a bound on
  the decompressed size, lines with a bound on their length, read faults as one rejection.

`tasks/extract.py` picks the reader for each source and chains them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ftflow.settings import Format, Settings, default


@dataclass(frozen=True)
class ExtractOptions:
    """How sources are read: derived from Settings (`from_settings`), whose defaults these are."""

    format: Format = default("format")
    turns_key: str | None = default("turns_key")
    role_key: str | None = default("role_key")
    content_key: str | None = default("content_key")
    text_key: str | None = default("text_key")
    speakers: dict[str, str] = field(default_factory=lambda: default("speakers"))  # PREFIX -> role
    id_column: str = default("id_column")
    order_column: str = default("order_column")
    role_column: str = default("role_column")
    content_column: str = default("content_column")
    sql_url: str | None = None  # a source, not a setting (its password stays out of settings)
    query: str | None = None  # a source, not a setting
    batch_size: int = default("batch_size")
    max_record_bytes: int = default("max_record_bytes")
    max_record_depth: int = default("max_record_depth")
    max_decompressed_bytes: int = default("max_decompressed_bytes")

    @classmethod
    def from_settings(cls, settings: Settings, sql_url: str | None = None, query: str | None = None) -> ExtractOptions:
        return cls(format=settings.format, turns_key=settings.turns_key, role_key=settings.role_key,
                   content_key=settings.content_key, text_key=settings.text_key, speakers=dict(settings.speakers),
                   id_column=settings.id_column, order_column=settings.order_column,
                   role_column=settings.role_column, content_column=settings.content_column, sql_url=sql_url,
                   query=query, batch_size=settings.batch_size,
                   max_record_bytes=settings.max_record_bytes, max_record_depth=settings.max_record_depth,
                   max_decompressed_bytes=settings.max_decompressed_bytes)


@dataclass(frozen=True)
class Candidate:
    """A record read whole: from chat sources an example in OpenAI's chat shape, roles still as the
    source spelled them; from preference files the record as written (tasks/preference.py shapes it)."""

    source: str
    loc: str
    example: dict[str, Any]


@dataclass(frozen=True)
class Rejection:
    source: str
    loc: str
    reason: str
    detail: str
    record: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "loc": self.loc,
            "reason": self.reason,
            "detail": self.detail,
            "record": self.record,
        }


Item = Candidate | Rejection


class Reader(Protocol):
    """What every file reader is: given a path and the options, one Item per record, in order.

    Readers of files that shards enter in the middle also take the range as keywords
    (`start`, `end`, `first_line`; `row_groups` for Parquet).
    """

    def __call__(self, path: Path, options: ExtractOptions, /) -> Iterator[Item]: ...


class RecordRejected(Exception):
    """A record that was read but holds no conversation a reader can shape: `reason` is its rejection reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def printable(text: str) -> str:
    """Text without surrogates, which JSON output cannot hold: an undecodable byte becomes U+FFFD."""
    try:
        raw = text.encode("utf-8", "surrogateescape")  # bytes that were not UTF-8, as read
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "replace")
