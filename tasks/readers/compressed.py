"""What every file reader reads through: `.gz` looked through with a bound on what it decompresses
to, lines with a bound on their length, and a read fault as the one rejection for the rest of a file.

The bounds are settings: `max_decompressed_bytes` (a gzip bomb stops there, the rest is one
`decompressed_too_large` rejection) and `max_record_bytes` (a longer line is read past, never
held whole, and rejected as `too_long` with its first bytes).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ftflow.jsonl import open_binary
from ftflow.reading import BOM, ReadFault, TooLong, read_chunks, read_lines
from tasks.readers import ExtractOptions, Rejection


def open_source(path: Path, options: ExtractOptions) -> IO[bytes]:
    """A source file for reading, un-gzipped when it is `.gz`, up to max_decompressed_bytes."""
    return open_binary(path, options.max_decompressed_bytes)


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


def first_lines(path: Path, count: int = 5, limit: int = 1 << 20) -> list[bytes]:
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
