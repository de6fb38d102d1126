"""Extract: read raw conversations from files, tables and databases, streaming.

Every input record becomes exactly one `Candidate` (an OpenAI-shaped example with the
roles as the source spelled them) or one `Rejection` (with source, location and reason).
The readers, one per source kind, are in tasks/readers/; this stage finds the sources, picks
a reader for each and chains them.

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

import glob
import hashlib
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from ftflow.errors import InputError
from ftflow.jsonl import file_sha256
from tasks.readers import ExtractOptions, Item, Reader
from tasks.readers.jsonl import json_reader_for
from tasks.readers.sql import read_sql, sql_source_name
from tasks.readers.table import TABLE_SUFFIXES, read_csv_table, read_parquet_table
from tasks.readers.transcript import read_transcript_file


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


def fingerprint_sources(paths: list[Path], options: ExtractOptions) -> dict[str, str]:
    """Return {source: sha256}: file contents, or for SQL the redacted URL and the query."""
    prints = {str(p): file_sha256(p) for p in paths}
    if options.sql_url:
        text = f"{sql_source_name(options)}\n{options.query}"
        prints[sql_source_name(options)] = hashlib.sha256(text.encode()).hexdigest()
    return prints


def reader_for(path: Path, options: ExtractOptions) -> Reader:
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
    return json_reader_for(path, options)


def iter_items(paths: list[Path], options: ExtractOptions) -> Iterator[Item]:
    """Yield one Candidate or Rejection per input record, across all sources, streaming."""
    for path in paths:
        yield from reader_for(path, options)(path, options)
    if options.sql_url or options.query:
        yield from read_sql(options)
