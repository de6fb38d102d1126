"""Extract: read raw conversations from files, tables and databases, streaming.

Every input record becomes exactly one `Candidate` (an OpenAI-shaped example with the
roles as the source spelled them) or one `Rejection` (with source, location and reason).
Nothing is loaded whole: JSONL is read line by line, JSON arrays with ijson, CSV and Parquet
in pyarrow record batches, SQL results with a server-side cursor in `fetchmany` batches.

Supported shapes (auto-detected per record unless `--format` says otherwise):
- chat: OpenAI fine-tuning JSONL, `{"messages": [...], "tools": [...], ...}`, kept as is;
- nested: a list of turns under `conversations` / `turns` / `utterances` / `dialog` /
  `dialogue` (or `--turns-key`), each turn a dict with a role and a text key;
- transcript: plain text with speaker prefixes at the start of a line (`.txt` files,
  conversations separated by a line `---`, or a string field of JSON lines);
- table: message-per-row CSV or Parquet, rows grouped by conversation id;
- sql: the same, from a SQLAlchemy URL and query.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import ijson
import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import sqlalchemy as sa

from ftflow.errors import InputError
from ftflow.jsonl import file_sha256, open_binary

Format = Literal["auto", "chat", "nested", "transcript", "table", "sql"]

TURNS_KEYS = ("conversations", "turns", "utterances", "dialog", "dialogue")
ROLE_KEYS = ("role", "from", "speaker", "author", "sender")
CONTENT_KEYS = ("content", "value", "text", "utterance", "message")
TEXT_KEYS = ("text", "transcript")
DEFAULT_SPEAKERS = {
    "human": "user",
    "user": "user",
    "customer": "user",
    "assistant": "assistant",
    "ai": "assistant",
    "agent": "assistant",
    "system": "system",
}
TRANSCRIPT_SEPARATOR = re.compile(r"^-{3,}\s*$")
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


@dataclass(frozen=True)
class ExtractOptions:
    format: Format = "auto"
    turns_key: str | None = None
    role_key: str | None = None
    content_key: str | None = None
    text_key: str | None = None
    speakers: dict[str, str] = field(default_factory=dict)  # PREFIX -> role
    id_column: str = "conversation_id"
    order_column: str = "turn"
    role_column: str = "role"
    content_column: str = "content"
    sql_url: str | None = None
    query: str | None = None
    batch_size: int = 2000


@dataclass(frozen=True)
class Candidate:
    """An example in OpenAI's chat shape, roles still as the source spelled them."""

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


# --- sources -----------------------------------------------------------------------------


def resolve_sources(patterns: Iterable[str]) -> list[Path]:
    """Expand paths and globs (sorted, de-duplicated); a pattern matching nothing is an error."""
    paths: dict[Path, None] = {}
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        files = [Path(m) for m in matches if Path(m).is_file()]
        if not files:
            raise InputError(f"{pattern}: no such file")
        paths.update(dict.fromkeys(files))
    return list(paths)


def redact_url(url: str) -> str:
    """A database URL without its password, fit for logs and reports."""
    return sa.engine.make_url(url).render_as_string(hide_password=True)


def resolved_sql_url(options: ExtractOptions) -> str:
    """The URL itself, or for `env:NAME` the URL in that variable (how the CLI hides passwords)."""
    url = options.sql_url or ""
    if url.startswith("env:"):
        name = url.removeprefix("env:")
        if name not in os.environ:
            raise InputError(f"--sql-url points to ${name}, which is not set")
        return os.environ[name]
    return url


def sql_source_name(options: ExtractOptions) -> str:
    return f"sql:{redact_url(resolved_sql_url(options))}"


def fingerprint_sources(paths: list[Path], options: ExtractOptions) -> dict[str, str]:
    """Return {source: sha256}: file contents, or for SQL the redacted URL and the query."""
    prints = {str(p): file_sha256(p) for p in paths}
    if options.sql_url:
        text = f"{sql_source_name(options)}\n{options.query}"
        prints[sql_source_name(options)] = hashlib.sha256(text.encode()).hexdigest()
    return prints


# --- record shapes -----------------------------------------------------------------------


def speaker_pattern(speakers: dict[str, str]) -> tuple[re.Pattern[str], dict[str, str]]:
    """Regex matching a speaker prefix at the start of a line, and prefix -> role."""
    mapping = {**DEFAULT_SPEAKERS, **{k.lower(): v for k, v in speakers.items()}}
    names = sorted(mapping, key=len, reverse=True)
    alternatives = "|".join(re.escape(n) for n in names)
    return re.compile(rf"^[ \t]*({alternatives})[ \t]*:[ \t]?", re.IGNORECASE | re.MULTILINE), mapping


def parse_transcript(text: str, speakers: dict[str, str]) -> list[dict[str, str]]:
    """Split a transcript into turns at speaker prefixes that start a line.

    Raises ValueError when there is no prefix, or text stands before the first one.
    """
    pattern, mapping = speaker_pattern(speakers)
    matches = list(pattern.finditer(text))
    if not matches:
        raise ValueError("no speaker prefix at the start of any line")
    if text[: matches[0].start()].strip():
        raise ValueError("text before the first speaker prefix")
    turns = []
    for match, following in zip(matches, [*matches[1:], None], strict=True):
        end = following.start() if following else len(text)
        role = mapping[match.group(1).lower()]
        turns.append({"role": role, "content": text[match.end() : end]})
    return turns


def _first_key(obj: dict[str, Any], explicit: str | None, defaults: tuple[str, ...]) -> str | None:
    if explicit is not None:
        return explicit if explicit in obj else None
    return next((k for k in defaults if k in obj), None)


def nested_to_example(record: dict[str, Any], options: ExtractOptions) -> dict[str, Any]:
    """Turn a nested conversation (ShareGPT, turns/utterances/dialog) into `messages`."""
    turns_key = _first_key(record, options.turns_key, TURNS_KEYS)
    turns = record.get(turns_key) if turns_key else None
    if not isinstance(turns, list) or not turns:
        raise _Reject("missing_messages", "no non-empty list of turns")
    messages: list[dict[str, Any]] = []
    if isinstance(record.get("system"), str):  # ShareGPT keeps the system prompt beside
        messages.append({"role": "system", "content": record["system"]})
    for number, turn in enumerate(turns, 1):
        if not isinstance(turn, dict):
            raise _Reject("data_type", f"turn {number} is {type(turn).__name__}, not an object")
        role_key = _first_key(turn, options.role_key, ROLE_KEYS)
        content_key = _first_key(turn, options.content_key, CONTENT_KEYS)
        messages.append(
            {
                "role": turn.get(role_key) if role_key else None,
                "content": turn.get(content_key) if content_key else None,
            }
        )
    return {"messages": messages}


class _Reject(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def record_to_example(record: Any, options: ExtractOptions) -> dict[str, Any]:
    """Map one decoded JSON record to an OpenAI-shaped example, by the chosen or detected shape."""
    if not isinstance(record, dict):
        raise _Reject("data_type", f"record is {type(record).__name__}, not an object")
    shape = options.format
    if shape == "auto":
        if "messages" in record:
            shape = "chat"
        elif _first_key(record, options.turns_key, TURNS_KEYS):
            shape = "nested"
        elif _first_key(record, options.text_key, TEXT_KEYS):
            shape = "transcript"
        else:
            raise _Reject("missing_messages", "no `messages`, list of turns or transcript text")
    if shape == "chat":
        if "messages" not in record:
            raise _Reject("missing_messages", "no `messages` key")
        return record
    if shape == "nested":
        return nested_to_example(record, options)
    if shape == "transcript":
        key = _first_key(record, options.text_key, TEXT_KEYS)
        text = record.get(key) if key else None
        if not isinstance(text, str):
            raise _Reject("missing_messages", "no transcript text field")
        try:
            return {"messages": parse_transcript(text, options.speakers)}
        except ValueError as exc:
            raise _Reject("unparseable_transcript", str(exc)) from None
    raise InputError(f"format {shape!r} does not apply to JSON records")


def _decode(source: str, loc: str, raw: bytes, options: ExtractOptions) -> Item:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection(source, loc, "invalid_utf8", str(exc), raw.decode("utf-8", "replace"))
    try:
        record = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return Rejection(source, loc, "invalid_json", str(exc), text.rstrip("\r\n"))
    return _convert(source, loc, record, options)


def _convert(source: str, loc: str, record: Any, options: ExtractOptions) -> Item:
    try:
        return Candidate(source, loc, record_to_example(record, options))
    except _Reject as exc:
        return Rejection(source, loc, exc.reason, exc.detail, record)


# --- readers -----------------------------------------------------------------------------


def read_json_lines(
    path: Path, options: ExtractOptions, *, start: int = 0, end: int | None = None, first_line: int = 1
) -> Iterator[Item]:
    """Records of the lines in bytes [start, end) (a shard), numbered from first_line."""
    source = str(path)
    with open_binary(path) as f:
        f.seek(start)
        position = start
        for number, raw in enumerate(f, first_line):
            if end is not None and position >= end:
                break
            position += len(raw)
            if raw.strip():  # blank lines hold no record
                yield _decode(source, f"line {number}", raw, options)


def read_json_array(path: Path, options: ExtractOptions) -> Iterator[Item]:
    source = str(path)
    index = 0
    with open_binary(path) as f:
        try:
            for index, record in enumerate(ijson.items(f, "item", use_float=True), 1):
                yield _convert(source, f"item {index}", record, options)
        except (ijson.JSONError, UnicodeDecodeError) as exc:
            # The rest of the array cannot be parsed; it is one rejected record, not lost silently.
            reason = "invalid_utf8" if isinstance(exc, UnicodeDecodeError) else "invalid_json"
            yield Rejection(source, f"item {index + 1}", reason, f"{exc}; the rest of the file is unreadable")


def read_transcript_file(
    path: Path, options: ExtractOptions, *, start: int = 0, end: int | None = None, first_line: int = 1
) -> Iterator[Item]:
    """One conversation per block; blocks are separated by a line of `---`. Streamed by line.

    A shard reads bytes [start, end), which begin and end at block boundaries, numbered from first_line.
    """
    source = str(path)

    def block_item(lines: list[str], start: int, bad_line: int | None) -> Item | None:
        text = "".join(lines)
        if bad_line is not None:
            return Rejection(source, f"line {start}", "invalid_utf8", f"line {bad_line} is not valid UTF-8", text)
        if not text.strip():
            return None
        try:
            return Candidate(source, f"line {start}", {"messages": parse_transcript(text, options.speakers)})
        except ValueError as exc:
            return Rejection(source, f"line {start}", "unparseable_transcript", str(exc), text)

    block: list[str] = []
    block_start, bad_line, number = first_line, None, 0
    with open_binary(path) as f:
        f.seek(start)
        position = start
        for number, raw in enumerate(f, first_line):
            if end is not None and position >= end:
                break
            position += len(raw)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                line, bad_line = raw.decode("utf-8", "replace"), bad_line or number
            if TRANSCRIPT_SEPARATOR.match(line):
                if item := block_item(block, block_start, bad_line):
                    yield item
                block, block_start, bad_line = [], number + 1, None
            else:
                block.append(line)
    if item := block_item(block, block_start, bad_line):
        yield item


def _sort_key(value: Any) -> tuple[int, Any]:
    try:
        return (0, float(value))
    except (TypeError, ValueError):
        return (1, str(value))


def group_rows(rows: Iterable[tuple[str, dict[str, Any]]], source: str, options: ExtractOptions) -> Iterator[Item]:
    """Group message-per-row rows (loc, row) by conversation id into examples.

    Rows of one conversation must be contiguous (sort the table or query by id); a
    conversation whose rows appear again after another one started is rejected, not merged.
    """
    seen: set[str] = set()
    current_id: str | None = None
    current: list[tuple[str, dict[str, Any]]] = []

    def flush() -> Iterator[Item]:
        if current_id is None:
            return
        loc = current[0][0]
        if current_id in seen:
            yield Rejection(
                source,
                loc,
                "conversation_not_contiguous",
                f"rows of conversation {current_id!r} appear again after other conversations",
                [row for _, row in current],
            )
            return
        seen.add(current_id)
        ordered = sorted(current, key=lambda item: _sort_key(item[1].get(options.order_column)))
        messages = [
            {"role": row.get(options.role_column), "content": row.get(options.content_column)} for _, row in ordered
        ]
        yield Candidate(source, loc, {"messages": messages})

    for loc, row in rows:
        conversation_id = row.get(options.id_column)
        if conversation_id is None or str(conversation_id).strip() == "":
            yield Rejection(source, loc, "missing_conversation_id", f"no {options.id_column!r}", row)
            continue
        conversation_id = str(conversation_id)
        if conversation_id != current_id:
            yield from flush()
            current_id, current = conversation_id, []
        current.append((loc, row))
    yield from flush()


def _check_columns(names: list[str], source: str, options: ExtractOptions) -> None:
    needed = [options.id_column, options.order_column, options.role_column, options.content_column]
    missing = [c for c in needed if c not in names]
    if missing:
        raise InputError(f"{source}: missing column(s) {missing}; have {names}")


def _batch_rows(batches: Iterable[pa.RecordBatch], first_row: int) -> Iterator[tuple[str, dict]]:
    row = first_row
    for batch in batches:
        for record in batch.to_pylist():
            yield f"row {row}", record
            row += 1


def read_csv_table(path: Path, options: ExtractOptions) -> Iterator[Item]:
    source = str(path)
    with open_binary(path) as f:
        header = next(csv.reader([f.readline().decode("utf-8-sig")]), [])
        _check_columns(header, source, options)
        f.seek(0)
        reader = pacsv.open_csv(
            f,
            read_options=pacsv.ReadOptions(block_size=1 << 22),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in header}, strings_can_be_null=True
            ),
        )
        # Data rows are numbered from 2: the header is row 1, as a spreadsheet shows it.
        yield from group_rows(_batch_rows(reader, 2), source, options)


def read_parquet_table(
    path: Path, options: ExtractOptions, *, row_groups: list[int] | None = None, first_line: int = 1
) -> Iterator[Item]:
    """Rows of the given row groups (a shard; all when None), numbered from first_line."""
    source = str(path)
    parquet = pq.ParquetFile(path)
    _check_columns(parquet.schema_arrow.names, source, options)
    columns = [options.id_column, options.order_column, options.role_column, options.content_column]
    batches = parquet.iter_batches(batch_size=options.batch_size, row_groups=row_groups, columns=columns)
    yield from group_rows(_batch_rows(batches, first_line), source, options)


def read_sql(options: ExtractOptions) -> Iterator[Item]:
    """Run the query ordered by conversation and turn; stream rows with a server-side cursor."""
    if not options.sql_url or not options.query:
        raise InputError("SQL extraction needs both --sql-url and --query")
    source = sql_source_name(options)
    engine = sa.create_engine(resolved_sql_url(options))
    prep = engine.dialect.identifier_preparer
    ordered = sa.text(
        f"SELECT * FROM ({options.query.rstrip().rstrip(';')}) AS ftflow_source "
        f"ORDER BY {prep.quote(options.id_column)}, {prep.quote(options.order_column)}"
    )
    try:
        with engine.connect() as conn:
            result = conn.execution_options(stream_results=True).execute(ordered)
            _check_columns(list(result.keys()), source, options)

            def rows() -> Iterator[tuple[str, dict[str, Any]]]:
                number = 1
                while batch := result.mappings().fetchmany(options.batch_size):
                    for row in batch:
                        yield f"row {number}", dict(row)
                        number += 1

            yield from group_rows(rows(), source, options)
    except sa.exc.SQLAlchemyError as exc:
        raise InputError(f"{source}: query failed: {exc.__class__.__name__}: {exc.orig or exc}") from None
    finally:
        engine.dispose()


def reader_for(path: Path, options: ExtractOptions) -> Callable[[Path, ExtractOptions], Iterator[Item]]:
    """Pick the reader from --format and the file name (`.gz` looked through)."""
    name = path.name.removesuffix(".gz").lower()
    if options.format == "sql":
        raise InputError(f"{path}: --format sql reads --sql-url/--query, not files")
    if options.format == "table" or name.endswith(TABLE_SUFFIXES):
        if name.endswith(".csv"):
            return read_csv_table
        if name.endswith((".parquet", ".pq")):
            return read_parquet_table
        raise InputError(f"{path}: tables must be .csv or .parquet")
    if name.endswith(".txt") or (options.format == "transcript" and not name.endswith((".json", ".jsonl"))):
        return read_transcript_file
    if name.endswith(".json"):
        with open_binary(path) as f:
            head = f.read(4096).lstrip()
        if head.startswith(b"["):
            return read_json_array
    return read_json_lines


def iter_items(paths: list[Path], options: ExtractOptions) -> Iterator[Item]:
    """Yield one Candidate or Rejection per input record, across all sources, streaming."""
    for path in paths:
        yield from reader_for(path, options)(path, options)
    if options.sql_url or options.query:
        yield from read_sql(options)
