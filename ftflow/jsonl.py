"""Streaming file helpers shared by the stages: gzip-aware JSONL, one record at a time; hashing;
small files written whole.

JSON is read and written by orjson, except where it would change a number: orjson reads an
integer beyond 64 bits as a float (`123456789012345678901234567890` -> `1.2345678901234568e+29`)
and cannot write one. `loads_exact` and `dumps_exact` keep such integers exactly as written by
taking the standard library's parser for the few texts and values that hold one; everything
else stays orjson's, byte for byte.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

# An integer orjson cannot hold has 19 digits at least (64 bits hold -2**63 .. 2**64 - 1). Texts
# with a run of 19 digits (in a string, too) are few; they are the ones read again, exactly.
LONG_NUMBER = re.compile(rb"\d{19}")
INT64_RANGE = range(-(1 << 63), 1 << 64)


def holds_long_integer(value: Any) -> bool:
    """Whether an integer beyond 64 bits is anywhere in value (arrays and objects walked without recursion)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
        elif isinstance(item, int) and not isinstance(item, bool) and item not in INT64_RANGE:
            return True
    return False


def loads_exact(data: bytes) -> Any:
    """A JSON text ftflow wrote (trusted), integers beyond 64 bits kept exact."""
    return json.loads(data) if LONG_NUMBER.search(data) else orjson.loads(data)


def dumps_exact(value: Any, *, sort_keys: bool = False) -> bytes:
    """Compact JSON, as orjson writes it; a value holding an integer beyond 64 bits, which orjson
    cannot write, in the standard library's same compact form (its floats written as Python
    spells them, `1e+16` for orjson's `1e16`)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else None)
    except TypeError:
        if not holds_long_integer(value):
            raise
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys,
                          allow_nan=False).encode()


class DecompressedTooLarge(OSError):
    """A compressed file gives out more bytes than the bound set on it."""


class BoundedGzipFile(gzip.GzipFile):
    """A gzip file that raises DecompressedTooLarge once it would give out more than `limit` bytes."""

    def __init__(self, path: Path, limit: int) -> None:
        super().__init__(path, "rb")
        self.limit, self.given = limit, 0

    def _count(self, data: bytes) -> bytes:
        self.given += len(data)
        if self.given > self.limit:
            raise DecompressedTooLarge(f"it decompresses to more than {self.limit:,} bytes")
        return data

    def read(self, size: int | None = -1) -> bytes:
        return self._count(super().read(size))

    def read1(self, size: int = -1) -> bytes:
        return self._count(super().read1(size))


def open_binary(path: Path, max_decompressed: int | None = None) -> IO[bytes]:
    """Open a file for reading, transparently un-gzipping `.gz` files (up to max_decompressed bytes)."""
    if path.suffix == ".gz":
        return BoundedGzipFile(path, max_decompressed) if max_decompressed else gzip.open(path, "rb")
    return open(path, "rb")


def read_chunks(f: IO[bytes], length: int | None = None, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """The next `length` bytes of f (all that is left if None), in chunks; fewer if f ends first."""
    while length is None or length > 0:
        chunk = f.read(chunk_size if length is None else min(chunk_size, length))
        if not chunk:
            return
        if length is not None:
            length -= len(chunk)
        yield chunk


def file_sha256(path: Path, chunk_size: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in read_chunks(f, chunk_size=chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def write_whole(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it into place: a reader (or a
    process writing the same file at once) sees the old file or all of the new one, never a part."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise


def iter_records(path: Path) -> Iterator[dict[str, Any]]:
    """Read back a JSONL file that ftflow itself wrote (trusted: every line is valid)."""
    with open_binary(path) as f:
        for line in f:
            yield loads_exact(line)


class JsonlWriter:
    """Append records to a JSONL file, one line each, counting them."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.count = 0
        self._file = open(path, "wb")

    def write(self, record: Any) -> None:
        self._file.write(dumps_exact(record))
        self._file.write(b"\n")
        self.count += 1

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
