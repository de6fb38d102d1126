"""Planning: cut the input into shards, independent units each prepared in one pass.

`plan_shards` names each unit (a source and a range of it, never its data):
- plain JSONL and transcript files: byte ranges ending at a line (a `---` separator for
  transcripts), with the number of the range's first line so reported locations stay absolute;
- `.gz` files, JSON arrays and CSV: the whole file (they cannot be entered in the middle);
- Parquet: runs of row groups (never cutting a conversation whose rows span two groups);
- SQL: one shard.
`plan_whole_files` makes one shard per file, for inputs whose records cannot be cut apart
(preference pairs: tasks/passes/preference.py).

Each shard is hashed here, and the hash keys its stored result (tasks/shards/store.py); a
record pass (tasks/passes/) prepares it; the runner (tasks/shards/runner.py) says where.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import orjson
import pyarrow as pa
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ftflow.errors import InputError
from ftflow.jsonl import file_sha256, read_chunks, write_whole
from ftflow.settings import default
from tasks.extract import fingerprint_sources, reader_for, resolve_sources
from tasks.readers import ExtractOptions
from tasks.readers.jsonl import read_json_lines
from tasks.readers.table import read_parquet_table
from tasks.readers.transcript import TRANSCRIPT_SEPARATOR, read_transcript_file

ShardKind = Literal["lines", "transcript", "file", "parquet", "sql"]
DEFAULT_SHARD_BYTES: int = int(default("shard_mb") * (1 << 20))
READ_CHUNK = 1 << 22


@dataclass(frozen=True)
class Shard:
    """One independent unit of input: a source and a range of it. Carries no data."""

    index: int
    source: str
    kind: ShardKind
    start: int = 0  # byte offset (lines, transcript)
    end: int | None = None  # byte offset, exclusive; None: to the end
    first_line: int = 1  # number of the range's first line (first row, for Parquet)
    row_groups: tuple[int, ...] | None = None
    fingerprint: str = ""  # sha256 of the bytes the shard reads; empty when it cannot be known (SQL)

    @property
    def name(self) -> str:
        """Short and unique within a run, as the Prefect UI shows it: `<index>-<file>-<range>`."""
        base = Path(self.source).name if self.kind != "sql" else "sql"
        if self.kind in ("lines", "transcript"):
            return f"{self.index:04d}-{base}-L{self.first_line}"
        if self.kind == "parquet" and self.row_groups:
            return f"{self.index:04d}-{base}-rg{self.row_groups[0]}-{self.row_groups[-1]}"
        return f"{self.index:04d}-{base}"


@dataclass
class Plan:
    shards: list[Shard]
    fingerprints: dict[str, str]  # source -> sha256 of its content (SQL: of the URL and query)
    skipped_sources: list[str] = field(default_factory=list)  # glob matches that could not be read, and why


def _kind_of(path: Path, options: ExtractOptions) -> ShardKind:
    reader = reader_for(path, options)
    if path.suffix == ".gz":
        return "file"
    return {read_json_lines: "lines", read_transcript_file: "transcript", read_parquet_table: "parquet"}.get(
        reader, "file"
    )


def _line_head(f: Any, size: int = 1024) -> bytes:
    """The first `size` bytes of the line at f's position (b"" at the end), leaving f after the line.

    However long the line, it is read in bounded pieces, never held whole.
    """
    head = f.readline(size)
    if len(head) == size and not head.endswith(b"\n"):
        while (piece := f.readline(READ_CHUNK)) and not piece.endswith(b"\n"):
            pass
    return head


def _boundary_after(f: Any, position: int, kind: ShardKind) -> int:
    """The first record boundary at or after position: a line start, or after a `---` line."""
    f.seek(position - 1)
    if f.read(1) != b"\n":
        _line_head(f)  # finish the line the position falls into
    if kind == "transcript":
        while line := _line_head(f):
            if TRANSCRIPT_SEPARATOR.match(line.decode("utf-8", "replace")):
                break
    return f.tell()


def _ends_record(f: Any, position: int, kind: ShardKind) -> bool:
    """Whether a record ends right before position: a whole line ends there (for transcripts,
    a `---` line)."""
    tail_size = min(position, 1024)  # a separator line is short; a longer last line is not one
    f.seek(position - tail_size)
    tail = f.read(tail_size)
    if not tail.endswith(b"\n"):
        return False
    if kind != "transcript":
        return True
    last_line = tail[tail.rfind(b"\n", 0, len(tail) - 1) + 1:]
    return bool(TRANSCRIPT_SEPARATOR.match(last_line.decode("utf-8", "replace")))


@dataclass(frozen=True)
class Cut:
    """A range a previous plan cut a file into, as recorded in the work dir."""

    start: int
    end: int
    first_line: int
    fingerprint: str
    lines: int  # line ends in the range: unchanged bytes need not be counted again


class CutHistory:
    """The ranges each plain file was last cut into, per work dir.

    Logs grow by appending. Cut afresh, a grown file's last range would end further on, so the
    shard that read last week's tail would change and be prepared again. A planner that starts
    from the previous cuts, for as long as their bytes are unchanged and each still ends a record,
    leaves every stored shard as it was and cuts only the appended bytes into new ranges.
    Each append so adds ranges of its own, however small; without this history (delete
    `work_dir/cuts`) a file is cut afresh into ranges of shard_bytes.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _file(self, path: Path, kind: ShardKind, shard_bytes: int) -> Path:
        identity = f"{path.resolve()}\0{kind}\0{shard_bytes}".encode()
        return self.directory / f"{hashlib.sha256(identity).hexdigest()[:32]}.json"

    def load(self, path: Path, kind: ShardKind, shard_bytes: int) -> list[Cut]:
        try:
            return [Cut(*cut) for cut in orjson.loads(self._file(path, kind, shard_bytes).read_bytes())]
        except (OSError, orjson.JSONDecodeError, TypeError):  # none yet, or unreadable: cut afresh
            return []

    def save(self, path: Path, kind: ShardKind, shard_bytes: int, cuts: list[Cut]) -> None:
        target = self._file(path, kind, shard_bytes)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_whole(target, orjson.dumps([astuple(cut) for cut in cuts]))


def _plan_ranges(path: Path, kind: ShardKind, shard_bytes: int, first_index: int,
                 previous: Sequence[Cut] = ()) -> tuple[list[Shard], str, list[Cut]]:
    """Byte ranges of about shard_bytes at record boundaries, each hashed, the file's sha256, and
    the cuts to record.

    The previous plan's cuts are kept, from the start, while each range's bytes are unchanged
    and it still ends a record (see CutHistory); the rest of the file is cut afresh.
    """
    size = path.stat().st_size
    # The whole file's sha256 on a thread of its own while the ranges are hashed (hashlib lets go of the GIL).
    hashing = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sha256-{path.name}")
    whole = hashing.submit(file_sha256, path, READ_CHUNK)
    hashing.shutdown(wait=False)
    cuts: list[Cut] = []
    start, line = 0, 1
    reusable = list(previous)
    with open(path, "rb") as f, open(path, "rb") as data:
        while start < size:
            cut = reusable.pop(0) if reusable else None
            if cut is not None and _still_holds(cut, start, line, size, kind, f, data):
                cuts.append(cut)
            else:  # changed (or never cut): cut afresh from here on
                reusable = []
                end = _boundary_after(f, start + shard_bytes, kind) if start + shard_bytes < size else size
                fingerprint, newlines = _hash_range(data, start, end)
                cuts.append(Cut(start, end, line, fingerprint, newlines))
            start, line = cuts[-1].end, line + cuts[-1].lines
    shards = [Shard(first_index + i, str(path), kind, c.start, c.end, c.first_line, fingerprint=c.fingerprint)
              for i, c in enumerate(cuts)]
    return shards, whole.result(), cuts


def _still_holds(cut: Cut, start: int, line: int, size: int, kind: ShardKind, f: Any, data: Any) -> bool:
    """Whether a recorded cut can be kept: it starts where the plan has got to, lies within the
    file, still ends a record, and its bytes hash as they did."""
    return ((cut.start, cut.first_line) == (start, line) and cut.end <= size and _ends_record(f, cut.end, kind)
            and _hash_range(data, start, cut.end, count_lines=False)[0] == cut.fingerprint)


def _hash_range(data: Any, start: int, end: int, count_lines: bool = True) -> tuple[str, int]:
    """sha256 of the bytes [start, end) and the number of line ends among them (0 if not counted)."""
    part, newlines = hashlib.sha256(), 0
    data.seek(start)
    for chunk in read_chunks(data, end - start, READ_CHUNK):
        part.update(chunk)
        if count_lines:
            newlines += chunk.count(b"\n")
    return part.hexdigest(), newlines


def _plan_parquet(path: Path, options: ExtractOptions, shard_bytes: int, first_index: int, sha: str) -> list[Shard]:
    """Runs of row groups of about shard_bytes; a cut never falls inside one conversation's rows."""
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError):  # one whole-file shard: its reader quarantines the file with the reason
        return [Shard(first_index, str(path), "parquet", fingerprint=sha)]
    meta = parquet.metadata
    if options.id_column not in parquet.schema_arrow.names or meta.num_row_groups <= 1:
        return [Shard(first_index, str(path), "parquet", fingerprint=sha)]  # the reader reports missing columns
    ids = [parquet.read_row_group(i, columns=[options.id_column]).column(0) for i in range(meta.num_row_groups)]
    shards: list[Shard] = []
    groups: list[int] = []
    size, first_row, row = 0, 1, 1
    for i in range(meta.num_row_groups):
        continues = bool(groups) and len(ids[i]) and len(ids[i - 1]) and ids[i][0] == ids[i - 1][-1]
        if groups and size >= shard_bytes and not continues:
            shards.append(Shard(first_index + len(shards), str(path), "parquet", first_line=first_row,
                                row_groups=tuple(groups), fingerprint=f"{sha}:{groups}"))
            groups, size, first_row = [], 0, row
        groups.append(i)
        size += meta.row_group(i).total_byte_size
        row += meta.row_group(i).num_rows
    shards.append(Shard(first_index + len(shards), str(path), "parquet", first_line=first_row,
                        row_groups=tuple(groups), fingerprint=f"{sha}:{groups}"))
    return shards


def plan_shards(sources: list[str], options: ExtractOptions, shard_bytes: int = DEFAULT_SHARD_BYTES,
                history: CutHistory | None = None) -> Plan:
    """Cut the sources (paths, globs, and --sql-url/--query) into shards; hash every file.

    With a history, plain files are cut where the previous plan cut them, as far as their bytes
    are unchanged, and the new cuts are recorded.
    """
    skipped: list[str] = []
    paths = resolve_sources(sources, skipped) if sources else []
    if not paths and not options.sql_url:
        raise InputError("no sources: give paths or globs, or --sql-url and --query")
    shards: list[Shard] = []
    fingerprints: dict[str, str] = {}
    for path in paths:
        kind = _kind_of(path, options)
        if kind in ("lines", "transcript"):
            previous = history.load(path, kind, shard_bytes) if history else []
            ranges, fingerprints[str(path)], cuts = _plan_ranges(path, kind, shard_bytes, len(shards), previous)
            if history:
                history.save(path, kind, shard_bytes, cuts)
            shards += ranges
            continue
        fingerprints[str(path)] = file_sha256(path)
        if kind == "parquet":
            shards += _plan_parquet(path, options, shard_bytes, len(shards), fingerprints[str(path)])
        else:
            shards.append(Shard(len(shards), str(path), kind, fingerprint=fingerprints[str(path)]))
    if options.sql_url or options.query:
        sql = fingerprint_sources([], options) if options.sql_url else {"sql": ""}
        fingerprints.update(sql)
        shards.append(Shard(len(shards), next(iter(sql)), "sql"))
    return Plan(shards, fingerprints, skipped)


def plan_whole_files(sources: list[str]) -> Plan:
    """One shard per file, each hashed: for records that cannot be cut apart."""
    skipped: list[str] = []
    paths = resolve_sources(sources, skipped)
    if not paths:
        raise InputError("no sources: give files or globs")
    fingerprints = {str(p): file_sha256(p) for p in paths}
    return Plan([Shard(i, str(p), "file", fingerprint=fingerprints[str(p)]) for i, p in enumerate(paths)],
                fingerprints, skipped)


class Planner(Protocol):
    """What cuts an input into shards: a record pass (tasks/passes/), by how its records may be cut."""

    def plan(self, sources: list[str], shard_bytes: int, history: CutHistory) -> Plan: ...


@task(name="plan-shards", cache_policy=NO_CACHE)
def plan_input(sources: list[str], record_pass: Planner, shard_bytes: int, work_dir: str) -> Plan:
    """Return the shards of the input and a fingerprint of each source; warn of each unreadable match.

    Files are cut where the last plan in work_dir cut them, as far as they are unchanged, so an
    appended file re-prepares only its new bytes.
    """
    plan = record_pass.plan(sources, shard_bytes, CutHistory(Path(work_dir) / "cuts"))
    for message in plan.skipped_sources:
        get_run_logger().warning(message)
    return plan
