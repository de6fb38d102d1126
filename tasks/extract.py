"""Extract: read raw conversations from files, tables and databases, streaming.

Every input record becomes exactly one `Candidate` (an OpenAI-shaped example with the
roles as the source spelled them) or one `Rejection` (with source, location and reason).
Nothing is loaded whole: JSONL is read line by line, JSON arrays and documents value by value
(a scanner finds where each record ends, orjson parses it as in JSONL), CSV row by row,
Parquet in pyarrow record batches, SQL results with a server-side cursor in `fetchmany` batches.
A file that is cut short or fails to read keeps every complete record before the fault; the
rest is one rejection with the reason (`truncated_file`, `corrupt_file`, `read_error`).

Supported shapes (auto-detected per record unless `--format` says otherwise):
- chat: OpenAI fine-tuning JSONL, `{"messages": [...], "tools": [...], ...}`, kept as is;
- nested: a list of turns under `conversations` / `turns` / `utterances` / `dialog` /
  `dialogue` (or `--turns-key`), each turn a dict with a role and a text key;
  JSON may also be an array, pretty-printed, or one object wrapping the list (`{"data": [...]}`);
- transcript: plain text with speaker prefixes at the start of a line (`.txt` files,
  conversations separated by a line `---`, or a string field of JSON lines);
- table: message-per-row CSV or Parquet, rows grouped by conversation id;
- sql: the same, from a SQLAlchemy URL and query.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from ftflow.errors import InputError
from ftflow.jsonl import file_sha256, open_binary
from ftflow.reading import (
    BOM,
    READ_ERRORS,
    FaultingReader,
    JsonRejected,
    JsonScanner,
    ReadFault,
    TooLong,
    read_chunks,
    read_fault,
    read_lines,
    strict_loads,
)
from ftflow.settings import Format, Settings, default

if TYPE_CHECKING:  # SQLAlchemy is imported by the SQL source alone (a fifth of a second)
    import sqlalchemy as sa

TURNS_KEYS = ("conversations", "turns", "utterances", "dialog", "dialogue")
ROLE_KEYS = ("role", "from", "speaker", "author", "sender")
CONTENT_KEYS = ("content", "value", "text", "utterance", "message")
TEXT_KEYS = ("text", "transcript")
# Keys under which one JSON document may hold its list of records: {"data": [...]}.
WRAPPER_KEYS = ("data", "conversations", "records", "examples", "items")
DEFAULT_SPEAKERS = {
    "human": "user",
    "user": "user",
    "customer": "user",
    "assistant": "assistant",
    "ai": "assistant",
    "agent": "assistant",
    "bot": "assistant",
    "system": "system",
}
TRANSCRIPT_SEPARATOR = re.compile(r"^-{3,}\s*$")
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


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


def unusable_reason(path: Path) -> str | None:
    """Why a path cannot be read as a source file (a directory, a FIFO, a dangling link...), or None."""
    try:
        mode = path.stat().st_mode  # follows symbolic links
    except FileNotFoundError:
        return "a dangling symbolic link" if path.is_symlink() else "no such file"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISDIR(mode):
        return "a directory, not a file (give a glob such as DIR/*.jsonl)"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe), not a regular file"
    if not stat.S_ISREG(mode):
        return "a socket or device, not a regular file"
    if not os.access(path, os.R_OK):
        return "not readable (permission denied)"
    return None


def resolve_sources(patterns: Iterable[str], skipped: list[str] | None = None) -> list[Path]:
    """Expand paths and globs (sorted, de-duplicated) into readable regular files.

    A path given by name that cannot be read is an error. A glob match that cannot be read
    (special file, dangling link, no permission) is left out and described in `skipped`;
    sub-folders a glob matches are left out without a word. A pattern with nothing readable
    is an error.
    """
    paths: dict[Path, None] = {}
    for pattern in patterns:
        if not glob.has_magic(pattern):
            if reason := unusable_reason(Path(pattern)):
                raise InputError(f"{pattern}: {reason}")
            paths[Path(pattern)] = None
            continue
        found = 0
        for match in sorted(glob.glob(pattern, recursive=True)):
            path = Path(match)
            reason = unusable_reason(path)
            if reason is None:
                paths[path] = None
                found += 1
            elif not path.is_dir() and skipped is not None:
                skipped.append(f"{match}: skipped, {reason}")
        if not found:
            raise InputError(f"{pattern}: no such file")
    return list(paths)


def parse_sql_url(url: str) -> sa.URL:
    """A SQLAlchemy URL whose dialect and driver are installed; InputError saying what is wrong otherwise.

    Messages never include the password: they name the URL as redacted by SQLAlchemy.
    """
    import sqlalchemy as sa

    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise InputError(
            "--sql-url is not a database URL (expected dialect+driver://user@host/database, "
            "e.g. postgresql+psycopg://user@localhost/db or sqlite:///file.db)"
        ) from None
    shown = parsed.render_as_string(hide_password=True)
    try:
        parsed.get_dialect().import_dbapi()
    except sa.exc.NoSuchModuleError:
        raise InputError(f"--sql-url {shown}: unknown database dialect {parsed.drivername!r}") from None
    except ImportError as exc:
        raise InputError(f"--sql-url {shown}: the driver is not installed ({exc})") from None
    return parsed


def redact_url(url: str) -> str:
    """A database URL without its password, fit for logs and reports."""
    return parse_sql_url(url).render_as_string(hide_password=True)


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
    """One JSON record from its bytes: UTF-8, strict JSON (no lone surrogates), no repeated keys."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection(source, loc, "invalid_utf8", str(exc), raw.decode("utf-8", "replace"))
    try:
        record = strict_loads(raw, options.max_record_depth)
    except JsonRejected as exc:
        shown = _printable(text.rstrip("\r\n")) if exc.reason == "invalid_json" else text.strip()
        return Rejection(source, loc, exc.reason, exc.detail, shown)
    return _convert(source, loc, record, options)


def _printable(text: str) -> str:
    """Text without surrogates, which JSON output cannot hold: an undecodable byte becomes U+FFFD."""
    try:
        raw = text.encode("utf-8", "surrogateescape")  # bytes that were not UTF-8, as read
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "replace")


def _convert(source: str, loc: str, record: Any, options: ExtractOptions) -> Item:
    try:
        return Candidate(source, loc, record_to_example(record, options))
    except _Reject as exc:
        return Rejection(source, loc, exc.reason, exc.detail, record)


# --- readers -----------------------------------------------------------------------------


def fault_rejection(fault: ReadFault, source: str, loc: str) -> Rejection:
    """The one rejection that stands for the unreadable rest of a file."""
    text = fault.partial.decode("utf-8", "replace") if fault.partial else None
    return Rejection(source, loc, fault.reason, f"{fault.detail}; the rest of the file is unreadable", text)


def numbered_lines(f: Any, start: int, end: int | None, first_line: int,
                   max_bytes: int | None = None) -> Iterator[tuple[int, bytes | TooLong]]:
    """(number, line) for the lines in bytes [start, end) of f, numbered from first_line, without a BOM.

    A line over max_bytes comes as TooLong (see read_lines). It stops at the shard's end before
    reading on: what lies beyond belongs to the next shard (a read fault there is the next
    shard's to report). A ReadFault passes through.
    """
    if start:
        f.seek(start)
    lines, position, number = read_lines(f, max_bytes), start, first_line - 1
    while end is None or position < end:
        if (raw := next(lines, None)) is None:
            return
        number += 1
        position += len(raw)
        yield number, raw.removeprefix(BOM) if number == 1 and isinstance(raw, bytes) else raw


def too_long_rejection(source: str, loc: str, line: TooLong, max_bytes: int) -> Rejection:
    """The rejection of a record over the maximum length: its size and first bytes, never the whole of it."""
    return Rejection(source, loc, "too_long",
                     f"the record is {line.size:,} bytes, over max_record_bytes ({max_bytes:,}); "
                     f"its first {len(line.prefix)} bytes are kept", line.prefix.decode("utf-8", "replace"))


def read_json_lines(
    path: Path, options: ExtractOptions, *, start: int = 0, end: int | None = None, first_line: int = 1
) -> Iterator[Item]:
    """Records of the lines in bytes [start, end) (a shard), numbered from first_line."""
    source = str(path)
    number = first_line - 1
    with open_binary(path, options.max_decompressed_bytes) as f:
        try:
            for number, raw in numbered_lines(f, start, end, first_line, options.max_record_bytes):
                if isinstance(raw, TooLong):
                    yield too_long_rejection(source, f"line {number}", raw, options.max_record_bytes)
                elif raw.strip():  # blank lines hold no record
                    yield _decode(source, f"line {number}", raw, options)
        except ReadFault as fault:
            yield fault_rejection(fault, source, f"line {number + 1}")


class _BrokenJson(Exception):
    def __init__(self, loc: str, detail: str, rest: bytes) -> None:
        super().__init__(detail)
        self.loc, self.detail, self.rest = loc, detail, rest


def _array_items(source: str, scanner: JsonScanner, options: ExtractOptions) -> Iterator[Item]:
    """The items of the array whose `[` the scanner just consumed; _BrokenJson for an unreadable rest."""
    index = 0
    if scanner.expect(b"]"):
        return
    while True:
        index += 1
        try:
            raw = scanner.value()
        except JsonScanner.Truncated:
            raise _BrokenJson(f"item {index}", f"the file ends inside item {index}", scanner.rest()) from None
        yield _decode(source, f"item {index}", raw, options)
        scanner.compact()
        if scanner.expect(b"]"):
            return
        if not scanner.expect(b","):
            raise _BrokenJson(f"item {index + 1}", f"expected ',' or ']' after item {index}", scanner.rest())


def _looks_like_record(value: Any, options: ExtractOptions) -> bool:
    return isinstance(value, dict) and (
        "messages" in value
        or _first_key(value, options.turns_key, TURNS_KEYS) is not None
        or _first_key(value, options.text_key, TEXT_KEYS) is not None
    )


def _top_level_value(source: str, scanner: JsonScanner, options: ExtractOptions) -> Item:
    line = scanner.line()
    try:
        raw = scanner.value()
    except JsonScanner.Truncated:
        raise _BrokenJson(f"line {line}", "the file ends inside this value", scanner.rest()) from None
    return _decode(source, f"line {line}", raw, options)


def _wrapped_records(scanner: JsonScanner, options: ExtractOptions) -> bool:
    """Inside a top-level object: find a wrapper key holding a list of records.

    True leaves the scanner just after that list's `[`; False means the object is not a
    wrapper (the caller rewinds and reads it as one record).
    """
    if not scanner.expect(b"{"):
        return False
    while scanner.peek() == b'"':
        key = orjson.loads(scanner.value())
        if not scanner.expect(b":"):
            return False
        if key in WRAPPER_KEYS and scanner.expect(b"["):
            array_start = scanner.pos
            first = scanner.value() if scanner.peek() not in (b"]", b"") else b"null"
            try:
                is_list_of_records = _looks_like_record(orjson.loads(first), options)
            except orjson.JSONDecodeError:
                is_list_of_records = True  # its first item is broken: reject it as an item
            scanner.pos = array_start
            # `conversations` may also be one ShareGPT conversation's turns: then not a wrapper.
            return is_list_of_records
        scanner.value()
        if not scanner.expect(b","):
            return False
    return False


def _document_items(source: str, scanner: JsonScanner, options: ExtractOptions) -> Iterator[Item]:
    """Top-level values one after another; a lone object holding its records under a wrapper key is that list."""
    start = scanner.pos
    if scanner.peek() == b"[":
        scanner.pos += 1
        yield from _array_items(source, scanner, options)
    else:
        try:
            wrapper = _wrapped_records(scanner, options)
        except JsonScanner.Truncated:
            wrapper = False
        if wrapper:
            yield from _array_items(source, scanner, options)
            _skip_rest_of_object(scanner)
            return
        scanner.pos = start
        first = _top_level_value(source, scanner, options)
        if isinstance(first, Rejection) and first.reason == "missing_messages" and not scanner.peek():
            raise InputError(
                f"{source}: one JSON object with no conversation in it and no list of records under "
                f"{', '.join(WRAPPER_KEYS)}"
            )
        yield first
    while scanner.peek():
        scanner.compact()
        yield _top_level_value(source, scanner, options)


def _skip_rest_of_object(scanner: JsonScanner) -> None:
    """After a wrapper's list: the object's other keys (metadata) hold no records."""
    while scanner.expect(b","):
        scanner.value()
        if not scanner.expect(b":"):
            raise _BrokenJson("end", "expected ':' after a key", scanner.rest())
        scanner.value()
    if not scanner.expect(b"}"):
        raise _BrokenJson("end", "expected '}' at the end of the object", scanner.rest())


def _read_json(
    path: Path,
    items: Callable[[str, JsonScanner, ExtractOptions], Iterator[Item]],
    options: ExtractOptions,
) -> Iterator[Item]:
    source = str(path)
    last = "the start"
    with open_binary(path, options.max_decompressed_bytes) as f:
        try:
            scanner = JsonScanner(f)
            for item in items(source, scanner, options):
                last = item.loc
                yield item
            if scanner.peek():
                raise _BrokenJson("end", "data after the end of the JSON value", scanner.rest())
        except _BrokenJson as exc:
            text = exc.rest.decode("utf-8", "replace")
            yield Rejection(source, exc.loc, "invalid_json", f"{exc.detail}; the rest of the file is unreadable", text)
        except ReadFault as fault:
            yield fault_rejection(fault, source, f"after {last}")


def read_json_array(path: Path, options: ExtractOptions) -> Iterator[Item]:
    """A JSON array of records, streamed item by item."""

    def items(source: str, scanner: JsonScanner, options: ExtractOptions) -> Iterator[Item]:
        if not scanner.expect(b"["):
            raise _BrokenJson("item 1", "the file does not start with '['", scanner.rest())
        yield from _array_items(source, scanner, options)

    return _read_json(path, items, options)


def read_json_document(path: Path, options: ExtractOptions) -> Iterator[Item]:
    """Pretty-printed JSON: values one after another, or one object holding a list of records.

    `{"data": [...]}` (or `conversations`, `records`, `examples`, `items`) is read as that
    list, streamed; a single conversation object is one record.
    """
    return _read_json(path, _document_items, options)


def read_transcript_file(
    path: Path, options: ExtractOptions, *, start: int = 0, end: int | None = None, first_line: int = 1
) -> Iterator[Item]:
    """One conversation per block; blocks are separated by a line of `---`. Streamed by line.

    A shard reads bytes [start, end), which begin and end at block boundaries, numbered from first_line.
    """
    source = str(path)

    def block_item(lines: list[str], start: int, bad_line: int | None, long: TooLong | None) -> Item | None:
        text = "".join(lines)
        if long is not None:  # the block holds a line over the maximum: rejected by that line
            return too_long_rejection(source, f"line {start}", long, options.max_record_bytes)
        if bad_line is not None:
            return Rejection(source, f"line {start}", "invalid_utf8", f"line {bad_line} is not valid UTF-8", text)
        if not text.strip():
            return None
        try:
            return Candidate(source, f"line {start}", {"messages": parse_transcript(text, options.speakers)})
        except ValueError as exc:
            return Rejection(source, f"line {start}", "unparseable_transcript", str(exc), text)

    block: list[str] = []
    block_start, bad_line, long = first_line, None, None
    with open_binary(path, options.max_decompressed_bytes) as f:
        try:
            for number, raw in numbered_lines(f, start, end, first_line, options.max_record_bytes):
                if isinstance(raw, TooLong):
                    long = long or raw
                    continue
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    line, bad_line = raw.decode("utf-8", "replace"), bad_line or number
                if TRANSCRIPT_SEPARATOR.match(line):
                    if item := block_item(block, block_start, bad_line, long):
                        yield item
                    block, block_start, bad_line, long = [], number + 1, None, None
                else:
                    block.append(line)
        except ReadFault as fault:
            # The block being read may be cut short: it goes with the unreadable rest.
            fault.partial = "".join(block).encode() + fault.partial
            yield fault_rejection(fault, source, f"line {block_start}")
            return
    if item := block_item(block, block_start, bad_line, long):
        yield item


def _sort_key(value: Any) -> tuple[int, Any]:
    try:
        return (0, float(value))
    except (TypeError, ValueError):
        return (1, str(value))


@dataclass(frozen=True)
class RowProblem:
    """A table row that cannot be used as read, in place of its values.

    With a conversation id, the whole conversation is rejected for it (a conversation with a
    turn missing would be silently changed); without one, the row is rejected on its own.
    `ends_file` marks a read fault: the conversation being read and the rest of the file go.
    """

    reason: str
    detail: str
    record: Any = None
    conversation_id: str | None = None
    ends_file: bool = False


JSON_SCALARS = (str, int, float, bool, type(None))


def _problem_in(row: dict[str, Any], options: ExtractOptions) -> tuple[str, str] | None:
    """Why a table row's values cannot make a message: no turn order, or a value JSON cannot hold."""
    order = row.get(options.order_column)
    if order is None or (isinstance(order, str) and not order.strip()):
        return "missing_turn_order", f"no {options.order_column!r} value, so the turn's place is unknown"
    for column in (options.role_column, options.content_column):
        value = row.get(column)
        if isinstance(value, bytes):
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                return "invalid_utf8", f"{column!r} holds bytes that are not valid UTF-8"
        elif not isinstance(value, (*JSON_SCALARS, list, dict)):
            return "data_type", f"{column!r} is {type(value).__name__}, not text"
    return None


def _text_value(value: Any) -> Any:
    """Binary text columns (Parquet BYTE_ARRAY without a UTF-8 annotation, SQL BLOBs) as text."""
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _json_safe(value: Any) -> Any:
    """A value for rejected.jsonl: bytes, decimals and the like as their repr."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, str):
        return _printable(value)
    return value if isinstance(value, JSON_SCALARS) else repr(value)


def group_rows(
    rows: Iterable[tuple[str, dict[str, Any] | RowProblem]], source: str, options: ExtractOptions
) -> Iterator[Item]:
    """Group message-per-row rows (loc, row) by conversation id into examples.

    Rows of one conversation must be contiguous (sort the table or query by id); a
    conversation whose rows appear again after another one started is rejected, not merged.
    A conversation with a bad row (no turn order, a value that is not text, a ragged or
    undecodable CSV row, a row without an id between two of its rows) is rejected whole,
    with the first bad row's reason and location: never written with a turn missing.
    """
    seen: set[str] = set()
    current_id: str | None = None
    current: list[tuple[str, Any]] = []
    problem: tuple[str, RowProblem] | None = None  # the current conversation's first bad row

    def flush() -> Iterator[Item]:
        if current_id is None:
            return
        loc = current[0][0]
        records = [_json_safe(row.record if isinstance(row, RowProblem) else row) for _, row in current]
        if current_id in seen:
            yield Rejection(
                source,
                loc,
                "conversation_not_contiguous",
                f"rows of conversation {current_id!r} appear again after other conversations",
                records,
            )
            return
        seen.add(current_id)
        if problem is not None:
            bad_loc, bad = problem
            yield Rejection(source, loc, bad.reason, f"{bad_loc}: {bad.detail}", records)
            return
        ordered = sorted(current, key=lambda item: _sort_key(item[1].get(options.order_column)))
        messages = [
            {"role": _text_value(row.get(options.role_column)), "content": _text_value(row.get(options.content_column))}
            for _, row in ordered
        ]
        yield Candidate(source, loc, {"messages": messages})

    # Bad rows without a conversation id wait here: if the rows around them belong to one
    # conversation, they were part of it, and it goes with them; otherwise each goes alone.
    orphans: list[tuple[str, RowProblem]] = []

    def orphan_rejections() -> Iterator[Item]:
        for loc, bad in orphans:
            yield Rejection(source, loc, bad.reason, bad.detail, _json_safe(bad.record))
        orphans.clear()

    for loc, row in rows:
        if isinstance(row, RowProblem) and row.ends_file:
            if current_id is not None:
                problem = problem or (loc, RowProblem(row.reason, "the file ends before this conversation does"))
                yield from flush()
            yield from orphan_rejections()
            yield Rejection(source, loc, row.reason, row.detail, _json_safe(row.record))
            return
        if isinstance(row, RowProblem):
            conversation_id = row.conversation_id if row.conversation_id and row.conversation_id.strip() else None
        else:
            value = row.get(options.id_column)
            conversation_id = str(value) if value is not None and str(value).strip() else None
        if conversation_id is None:
            bad = row if isinstance(row, RowProblem) else RowProblem(
                "missing_conversation_id", f"no {options.id_column!r}", row)
            orphans.append((loc, bad))
            continue
        if conversation_id == current_id and orphans:
            for orphan_loc, bad in orphans:
                current.append((orphan_loc, bad))
                problem = problem or (orphan_loc, bad)
            orphans.clear()
        if conversation_id != current_id:
            yield from flush()
            yield from orphan_rejections()
            current_id, current, problem = conversation_id, [], None
        current.append((loc, row))
        if problem is None:
            if isinstance(row, RowProblem):
                problem = (loc, row)
            elif found := _problem_in(row, options):
                problem = (loc, RowProblem(*found))
    yield from flush()
    yield from orphan_rejections()


def _check_columns(names: list[str], source: str, options: ExtractOptions) -> None:
    needed = [options.id_column, options.order_column, options.role_column, options.content_column]
    missing = [c for c in needed if c not in names]
    if missing:
        raise InputError(f"{source}: missing column(s) {missing}; have {names}")


def _batch_rows(batches: Iterable[pa.RecordBatch], first_row: int) -> Iterator[tuple[str, dict | RowProblem]]:
    row = first_row
    try:
        for batch in batches:
            for record in batch.to_pylist():
                yield f"row {row}", record
                row += 1
    except (pa.ArrowException, *READ_ERRORS) as exc:
        from_os = isinstance(exc, READ_ERRORS) and getattr(exc, "errno", None) is not None  # pyarrow's have none
        fault = read_fault(exc) if from_os else ReadFault("corrupt_file", f"corrupt Parquet data ({exc})")
        yield f"row {row}", RowProblem(fault.reason, f"{fault.detail}; the rest of the file is unreadable",
                                       ends_file=True)


def _csv_rows(
    reader: Iterator[list[str]], header: list[str], options: ExtractOptions
) -> Iterator[tuple[str, dict | RowProblem]]:
    """CSV rows as dicts (empty cells as None); ragged or undecodable rows as RowProblems.

    Bytes that are not UTF-8 arrive as surrogate escapes, so one bad byte costs one row.
    Rows are numbered as a spreadsheet shows them: the header is row 1.
    """
    id_index = header.index(options.id_column)
    number = 1
    while True:
        number += 1
        loc = f"row {number}"
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield loc, RowProblem("malformed_row", f"not valid CSV ({exc})")
            continue
        except ReadFault as fault:
            yield loc, RowProblem(fault.reason, f"{fault.detail}; the rest of the file is unreadable", ends_file=True)
            return
        if not fields:
            continue  # a blank line holds no row
        conversation_id = fields[id_index] if len(fields) > id_index else None
        if len(fields) != len(header):
            detail = f"{len(fields)} fields where the header has {len(header)}"
            yield loc, RowProblem("ragged_row", detail, fields, conversation_id)
        elif any(_has_escapes(value) for value in fields):
            yield loc, RowProblem("invalid_utf8", "bytes that are not valid UTF-8", fields, conversation_id)
        else:
            yield loc, {name: (value if value != "" else None) for name, value in zip(header, fields, strict=True)}


_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def _has_escapes(value: str) -> bool:
    return _ESCAPED_BYTE.search(value) is not None


def read_csv_table(path: Path, options: ExtractOptions) -> Iterator[Item]:
    source = str(path)
    csv.field_size_limit(1 << 30)  # a long message is not an error
    with open_binary(path, options.max_decompressed_bytes) as f:
        text = io.TextIOWrapper(
            io.BufferedReader(FaultingReader(f)), encoding="utf-8-sig", errors="surrogateescape", newline=""
        )
        reader = csv.reader(text, strict=True)
        try:
            header = next(reader, [])
        except (ReadFault, csv.Error) as exc:
            fault = exc if isinstance(exc, ReadFault) else ReadFault("malformed_row", f"not valid CSV ({exc})")
            yield fault_rejection(fault, source, "row 1")
            return
        _check_columns(header, source, options)
        yield from group_rows(_csv_rows(reader, header, options), source, options)


def read_parquet_table(
    path: Path, options: ExtractOptions, *, row_groups: list[int] | None = None, first_line: int = 1
) -> Iterator[Item]:
    """Rows of the given row groups (a shard; all when None), numbered from first_line."""
    source = str(path)
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        yield Rejection(source, "row 1", "corrupt_file", f"not a readable Parquet file ({exc})")
        return
    _check_columns(parquet.schema_arrow.names, source, options)
    columns = [options.id_column, options.order_column, options.role_column, options.content_column]
    batches = parquet.iter_batches(batch_size=options.batch_size, row_groups=row_groups, columns=columns)
    yield from group_rows(_batch_rows(batches, first_line), source, options)


def read_sql(options: ExtractOptions) -> Iterator[Item]:
    """Run the query ordered by conversation and turn; stream rows with a server-side cursor."""
    if not options.sql_url or not options.query:
        raise InputError("SQL extraction needs both --sql-url and --query")
    import sqlalchemy as sa

    source = sql_source_name(options)
    engine = sa.create_engine(parse_sql_url(resolved_sql_url(options)))
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


def _first_lines(path: Path, count: int = 5, limit: int = 1 << 20) -> list[bytes]:
    """Up to `count` non-blank lines from the start of a file (BOM removed); fewer when unreadable or long."""
    head = b""
    try:
        with open_binary(path) as f:
            for chunk in read_chunks(f, 1 << 16):
                head += chunk
                if head.count(b"\n") > 4 * count or len(head) > limit:
                    break
    except ReadFault:
        pass
    lines = [line for line in head.removeprefix(BOM).split(b"\n") if line.strip()]
    return lines[:count]


def _parses_to_object(line: bytes) -> bool:
    try:
        return isinstance(orjson.loads(line), dict)
    except orjson.JSONDecodeError:
        return False


def _json_reader(path: Path, options: ExtractOptions) -> Callable[[Path, ExtractOptions], Iterator[Item]]:
    """JSON Lines, an array, or a pretty-printed or wrapped document, told apart by the content.

    JSON Lines: some of the first lines are objects on their own (a broken line among them
    stays a broken line). Pretty-printed: none is (`{` alone, `"key": [`...).
    """
    lines = _first_lines(path)
    head = lines[0].lstrip() if lines else b""
    if head.startswith(b"["):
        return read_json_array
    if head.startswith(b"{"):
        if _parses_to_object(lines[0]):
            return read_json_document if _is_wrapper(orjson.loads(lines[0]), options) else read_json_lines
        return read_json_lines if any(_parses_to_object(line) for line in lines[1:]) else read_json_document
    return read_json_lines  # it reports what is wrong with each line


def _is_wrapper(record: Any, options: ExtractOptions) -> bool:
    """An object that is no conversation but holds a list under a wrapper key: `{"data": [...]}`."""
    return (
        isinstance(record, dict)
        and not _looks_like_record(record, options)
        and any(isinstance(record.get(key), list) for key in WRAPPER_KEYS)
    )


def reader_for(path: Path, options: ExtractOptions) -> Callable[[Path, ExtractOptions], Iterator[Item]]:
    """Pick the reader from --format, the file name (`.gz` looked through) and, for JSON, the content."""
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
    return _json_reader(path, options)


def iter_items(paths: list[Path], options: ExtractOptions) -> Iterator[Item]:
    """Yield one Candidate or Rejection per input record, across all sources, streaming."""
    for path in paths:
        yield from reader_for(path, options)(path, options)
    if options.sql_url or options.query:
        yield from read_sql(options)
