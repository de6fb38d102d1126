"""Streaming file helpers shared by the stages: gzip-aware JSONL, one record at a time; hashing."""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson


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


def iter_records(path: Path) -> Iterator[dict[str, Any]]:
    """Read back a JSONL file that ftflow itself wrote (trusted: every line is valid)."""
    with open_binary(path) as f:
        for line in f:
            yield orjson.loads(line)


class JsonlWriter:
    """Append records to a JSONL file, one line each, counting them."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.count = 0
        self._file = open(path, "wb")

    def write(self, record: Any) -> None:
        self._file.write(orjson.dumps(record))
        self._file.write(b"\n")
        self.count += 1

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
