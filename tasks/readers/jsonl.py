"""JSON records: JSON Lines line by line, JSON arrays and documents value by value.

A scanner (ftflow/reading.py) finds where each value of an array or document ends without
parsing it; the value is then parsed as a JSON line is, by one strict rule (`strict_loads`).
Each record is mapped to an OpenAI-shaped example by the chosen or detected shape: chat
(`messages`, kept as is), nested turns (tasks/readers/nested.py) or transcript text in a field
(tasks/readers/transcript.py). A document may also be one object wrapping the list of records
(`{"data": [...]}`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from ftflow.errors import InputError
from ftflow.reading import JsonRejected, JsonScanner, ReadFault, TooLong, strict_loads
from tasks.readers import Candidate, ExtractOptions, Item, Reader, RecordRejected, Rejection, printable
from tasks.readers.compressed import fault_rejection, first_lines, numbered_lines, open_source, too_long_rejection
from tasks.readers.nested import TURNS_KEYS, first_key, nested_to_example
from tasks.readers.transcript import TEXT_KEYS, parse_transcript

# Keys under which one JSON document may hold its list of records: {"data": [...]}.
WRAPPER_KEYS = ("data", "conversations", "records", "examples", "items")
# What a decoded record becomes in its Candidate (RecordRejected if nothing): chat sources shape
# it into an example (`record_to_example`), preference files keep it as written.
Shape = Callable[[Any, ExtractOptions], Any]
# What makes an Item of one record's bytes (source, loc, raw, options, shape): `decode_record`,
# or a faster equivalent (tasks/passes/fast_chat.py).
Decoder = Callable[[str, str, bytes, ExtractOptions, Shape], Item]


def record_to_example(record: Any, options: ExtractOptions) -> dict[str, Any]:
    """Map one decoded JSON record to an OpenAI-shaped example, by the chosen or detected shape."""
    if not isinstance(record, dict):
        raise RecordRejected("data_type", f"record is {type(record).__name__}, not an object")
    shape = options.format
    if shape == "auto":
        if "messages" in record:
            shape = "chat"
        elif first_key(record, options.turns_key, TURNS_KEYS):
            shape = "nested"
        elif first_key(record, options.text_key, TEXT_KEYS):
            shape = "transcript"
        else:
            raise RecordRejected("missing_messages", "no `messages`, list of turns or transcript text")
    if shape == "chat":
        if "messages" not in record:
            raise RecordRejected("missing_messages", "no `messages` key")
        return record
    if shape == "nested":
        return nested_to_example(record, options)
    if shape == "transcript":
        key = first_key(record, options.text_key, TEXT_KEYS)
        text = record.get(key) if key else None
        if not isinstance(text, str):
            raise RecordRejected("missing_messages", "no transcript text field")
        try:
            return {"messages": parse_transcript(text, options.speakers)}
        except ValueError as exc:
            raise RecordRejected("unparseable_transcript", str(exc)) from None
    raise InputError(f"format {shape!r} does not apply to JSON records")


def decode_record(source: str, loc: str, raw: bytes, options: ExtractOptions,
                  shape: Shape = record_to_example) -> Item:
    """One JSON record from its bytes: UTF-8, strict JSON (no lone surrogates), no repeated keys."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection(source, loc, "invalid_utf8", str(exc), raw.decode("utf-8", "replace"))
    try:
        record = strict_loads(raw, options.max_record_depth)
    except JsonRejected as exc:
        shown = printable(text.rstrip("\r\n")) if exc.reason == "invalid_json" else text.strip()
        return Rejection(source, loc, exc.reason, exc.detail, shown)
    try:
        return Candidate(source, loc, shape(record, options))
    except RecordRejected as exc:
        return Rejection(source, loc, exc.reason, exc.detail, record)


def read_json_lines(
    path: Path, options: ExtractOptions, *, start: int = 0, end: int | None = None, first_line: int = 1,
    shape: Shape = record_to_example, decode: Decoder = decode_record,
) -> Iterator[Item]:
    """Records of the lines in bytes [start, end) (a shard), numbered from first_line, each made by `decode`."""
    source = str(path)
    number = first_line - 1
    with open_source(path, options) as f:
        try:
            for number, raw in numbered_lines(f, start, end, first_line, options.max_record_bytes):
                if isinstance(raw, TooLong):
                    yield too_long_rejection(source, f"line {number}", raw, options.max_record_bytes)
                elif raw.strip():  # blank lines hold no record
                    yield decode(source, f"line {number}", raw, options, shape)
        except ReadFault as fault:
            yield fault_rejection(fault, source, f"line {number + 1}")


class _BrokenJson(Exception):
    def __init__(self, loc: str, detail: str, rest: bytes) -> None:
        super().__init__(detail)
        self.loc, self.detail, self.rest = loc, detail, rest


def _array_items(source: str, scanner: JsonScanner, options: ExtractOptions,
                 shape: Shape = record_to_example) -> Iterator[Item]:
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
        yield decode_record(source, f"item {index}", raw, options, shape)
        scanner.compact()
        if scanner.expect(b"]"):
            return
        if not scanner.expect(b","):
            raise _BrokenJson(f"item {index + 1}", f"expected ',' or ']' after item {index}", scanner.rest())


def _looks_like_record(value: Any, options: ExtractOptions) -> bool:
    return isinstance(value, dict) and (
        "messages" in value
        or first_key(value, options.turns_key, TURNS_KEYS) is not None
        or first_key(value, options.text_key, TEXT_KEYS) is not None
    )


def _top_level_value(source: str, scanner: JsonScanner, options: ExtractOptions) -> Item:
    line = scanner.line()
    try:
        raw = scanner.value()
    except JsonScanner.Truncated:
        raise _BrokenJson(f"line {line}", "the file ends inside this value", scanner.rest()) from None
    return decode_record(source, f"line {line}", raw, options)


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
    with open_source(path, options) as f:
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


def read_json_array(path: Path, options: ExtractOptions, *, shape: Shape = record_to_example) -> Iterator[Item]:
    """A JSON array of records, streamed item by item."""

    def items(source: str, scanner: JsonScanner, options: ExtractOptions) -> Iterator[Item]:
        if not scanner.expect(b"["):
            raise _BrokenJson("item 1", "the file does not start with '['", scanner.rest())
        yield from _array_items(source, scanner, options, shape)

    return _read_json(path, items, options)


def read_json_document(path: Path, options: ExtractOptions) -> Iterator[Item]:
    """Pretty-printed JSON: values one after another, or one object holding a list of records.

    `{"data": [...]}` (or `conversations`, `records`, `examples`, `items`) is read as that
    list, streamed; a single conversation object is one record.
    """
    return _read_json(path, _document_items, options)


def _parses_to_object(line: bytes) -> bool:
    try:
        return isinstance(orjson.loads(line), dict)
    except orjson.JSONDecodeError:
        return False


def json_reader_for(path: Path, options: ExtractOptions) -> Reader:
    """JSON Lines, an array, or a pretty-printed or wrapped document, told apart by the content.

    JSON Lines: some of the first lines are objects on their own (a broken line among them
    stays a broken line). Pretty-printed: none is (`{` alone, `"key": [`...).
    """
    lines = first_lines(path)
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
