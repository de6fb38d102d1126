"""Shards: cut the input into independent units and prepare each in one fused pass.

`plan_shards` names each unit (a source and a range of it, never its data):
- plain JSONL and transcript files: byte ranges ending at a line (a `---` separator for
  transcripts), with the number of the range's first line so reported locations stay absolute;
- `.gz` files, JSON arrays and CSV: the whole file (they cannot be entered in the middle);
- Parquet: runs of row groups (never cutting a conversation whose rows span two groups);
- SQL: one shard.

`prepare_shard` reads one shard record by record through extract -> normalise (with PII) ->
per-example checks and token counts -> content and split digests, and writes the shard's
kept examples (in the order the reduce step reads them), rejections and feature rows once.
Its result is stored under a key made of the shard's content fingerprint, the settings that
change its output and the code, so an unchanged shard is reused by the next run. The reduce
step (tasks/reduce.py) de-duplicates across all shards.
"""

from __future__ import annotations

import hashlib
import heapq
import operator
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, astuple, dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ProcessPoolTaskRunner

from ftflow.encodings import get_encoding
from ftflow.errors import ConfigError, EnvironmentFailure, FtflowError, InputError, ShardFailed
from ftflow.jsonl import JsonlWriter, dumps_exact, file_sha256, read_chunks
from ftflow.settings import Settings, default
from tasks.checks import ExampleRejected, check_example
from tasks.extract import fingerprint_sources, reader_for, resolve_sources
from tasks.features import FEATURE_SCHEMA, FeatureWriter, feature_row
from tasks.readers import Candidate, ExtractOptions, Item, Rejection
from tasks.readers.jsonl import read_json_lines
from tasks.readers.sql import read_sql
from tasks.readers.table import read_parquet_table
from tasks.readers.transcript import TRANSCRIPT_SEPARATOR, read_transcript_file
from tasks.transform import TransformOptions, example_digests, normalize_example, split_for

ShardKind = Literal["lines", "transcript", "file", "parquet", "sql"]
DEFAULT_SHARD_BYTES: int = int(default("shard_mb") * (1 << 20))
READ_CHUNK = 1 << 22
# Columns the reduce step needs besides the features: where the example's line is, and the
# hash of its exact bytes (which copy of a duplicate is kept must not depend on input order).
SHARD_FEATURE_SCHEMA = FEATURE_SCHEMA.append(pa.field("ordinal", pa.int64())).append(
    pa.field("offset", pa.int64())).append(pa.field("length", pa.int64())).append(pa.field("line_sha256", pa.string()))
# The order a shard stores its kept examples in: the reduce step's order (tasks/reduce.py,
# SORT_KEYS) within one shard, so the reduce reads each shard's file once, front to back.
STORED_ORDER = operator.itemgetter("content_sha256", "line_sha256", "ordinal")
# The code that shapes a shard's output: a change in any of these files invalidates stored shards.
SHARD_CODE = ("extract.py", "readers/__init__.py", "readers/compressed.py", "readers/jsonl.py", "readers/nested.py",
              "readers/transcript.py", "readers/table.py", "readers/sql.py", "readers/preference.py",
              "transform.py", "pii.py", "checks.py", "features.py", "budget.py", "shards.py", "preference.py",
              "preference_shard.py", "../ftflow/reading.py", "../ftflow/jsonl.py")


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


# --- planning ------------------------------------------------------------------------------------


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
        temporary = target.with_suffix(f".{uuid.uuid4().hex[:8]}.partial")
        temporary.write_bytes(orjson.dumps([astuple(cut) for cut in cuts]))
        os.replace(temporary, target)


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


# --- one shard -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardSettings:
    """Everything besides the shard's bytes that changes what `prepare_shard` writes."""

    extract: ExtractOptions
    transform: TransformOptions
    encoding: str
    training_context: int
    validation_fraction: float

    @classmethod
    def for_model(
        cls, model: str, extract: ExtractOptions, transform: TransformOptions, validation_fraction: float
    ) -> ShardSettings:
        from ftflow.catalog import load_catalog
        from ftflow.encodings import encoding_name_for_model

        return cls(extract, transform, encoding_name_for_model(model), load_catalog().get(model).training_context,
                   validation_fraction)

    @classmethod
    def from_settings(cls, settings: Settings, extract: ExtractOptions | None = None) -> ShardSettings:
        """What the resolved settings make of a shard (`extract`: the options with the run's SQL source)."""
        from tasks.transform import TransformOptions

        return cls.for_model(settings.model, extract or ExtractOptions.from_settings(settings),
                             TransformOptions.from_settings(settings), settings.validation_fraction)

    def fingerprint(self) -> str:
        code = hashlib.sha256()
        here = Path(__file__).resolve().parent
        for name in SHARD_CODE:
            code.update((here / name).read_bytes())
        settings = orjson.dumps(asdict(self), option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(settings + code.digest()).hexdigest()


def shard_key(shard: Shard, settings_fingerprint: str) -> str | None:
    """Where a shard's result is stored; None when its content cannot be fingerprinted (SQL)."""
    if not shard.fingerprint:
        return None
    identity = {**asdict(shard), "index": None}  # the same range is the same shard whatever else is read
    return hashlib.sha256(orjson.dumps(identity, option=orjson.OPT_SORT_KEYS) + settings_fingerprint.encode()
                          ).hexdigest()[:32]


@dataclass
class ShardResult:
    """What one shard read, rejected (by stage and reason), changed and kept; where its files are."""

    shard: str
    index: int
    directory: str
    records_read: int = 0
    kept: int = 0
    rejected: dict[str, dict[str, int]] = field(default_factory=lambda: {"extract": {}, "quality": {}})
    trimmed_turns: int = 0
    merged_turns: int = 0
    pii: dict[str, int] = field(default_factory=dict)
    reused: bool = False

    @property
    def rejected_total(self) -> int:
        return sum(sum(r.values()) for r in self.rejected.values())

    def check(self) -> None:
        """Every record read is kept or rejected: a bug of ours otherwise, never bad data."""
        if self.kept + self.rejected_total != self.records_read:
            raise FtflowError(f"shard {self.shard}: read {self.records_read}, kept {self.kept}, "
                              f"rejected {self.rejected_total}")

    def summary(self) -> str:
        """One line for the shard's task run log: what it read and kept, and whether it was reused."""
        how = "stored result reused" if self.reused else "prepared"
        return f"{how}: {self.records_read:,} records read, {self.kept:,} kept, {self.rejected_total:,} rejected"


def shard_items(shard: Shard, options: ExtractOptions) -> Iterator[Item]:
    """The records of one shard, with absolute locations."""
    path = Path(shard.source)
    if shard.kind == "lines":
        return read_json_lines(path, options, start=shard.start, end=shard.end, first_line=shard.first_line)
    if shard.kind == "transcript":
        return read_transcript_file(path, options, start=shard.start, end=shard.end, first_line=shard.first_line)
    if shard.kind == "parquet":
        groups = list(shard.row_groups) if shard.row_groups is not None else None
        return read_parquet_table(path, options, row_groups=groups, first_line=shard.first_line)
    if shard.kind == "sql":
        return read_sql(options)
    return reader_for(path, options)(path, options)


class ShardFiles:
    """What a fused pass writes for one shard, each once: kept examples, rejections (counted by
    stage and reason), feature rows; `finish` seals the result into result.json.

    Kept examples are written sorted as the reduce step orders them (content digest, then the
    hash of their bytes, then ordinal), so the reduce reads each shard's file once, front to
    back, instead of seeking to every example. They are sorted in memory; a shard that keeps
    more than SPILL_BYTES (a large file that cannot be split) is sorted in runs on disk, which
    `finish` merges.

    Used by the chat pass below and the preference pass (tasks/preference_shard.py).
    """

    SPILL_BYTES = 128 << 20

    def __init__(self, result: ShardResult, directory: Path, schema: pa.Schema) -> None:
        self.result, self.directory, self.schema = result, directory, schema
        self.rejected_by: dict[str, Counter[str]] = {"extract": Counter(), "quality": Counter()}
        self._kept: list[tuple[bytes, dict[str, Any]]] = []
        self._kept_bytes = 0
        self._runs: list[Path] = []

    def __enter__(self) -> ShardFiles:
        self.directory.mkdir(parents=True)
        self.rejections = JsonlWriter(self.directory / "rejected.jsonl")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.rejections.close()

    def reject(self, stage: str, source: str, loc: str, reason: str, detail: str, record: Any) -> None:
        self.rejections.write({"source": source, "loc": loc, "reason": reason, "detail": detail, "record": record,
                               "stage": stage})
        self.rejected_by[stage][reason] += 1

    def keep(self, record: dict[str, Any], row: dict[str, Any], ordinal: int) -> None:
        """Hold a kept example until `finish` writes it in order; its row locates its bytes."""
        line = dumps_exact(record) + b"\n"
        self._kept.append((line, {**row, "ordinal": ordinal, "line_sha256": hashlib.sha256(line).hexdigest()}))
        self._kept_bytes += len(line)
        self.result.kept += 1
        if self._kept_bytes >= self.SPILL_BYTES:
            self._spill()

    def _spill(self) -> None:
        """Write the examples held so far, sorted, as a run to merge at the end."""
        run = self.directory / f".run-{len(self._runs)}"
        self._write_sorted(self._sorted_held(), run.with_suffix(".jsonl"), run.with_suffix(".parquet"))
        self._runs.append(run)

    def _sorted_held(self) -> list[tuple[bytes, dict[str, Any]]]:
        held, self._kept, self._kept_bytes = self._kept, [], 0
        held.sort(key=lambda kept: STORED_ORDER(kept[1]))
        return held

    def _write_sorted(self, kept: Iterable[tuple[bytes, dict[str, Any]]], lines: Path, rows: Path) -> None:
        offset = 0
        with open(lines, "wb", buffering=1 << 20) as examples, FeatureWriter(rows, self.schema) as features:
            for line, row in kept:
                row["offset"], row["length"] = offset, len(line)  # the row is this writer's own copy
                features.add(row)
                examples.write(line)
                offset += len(line)

    def _merged_runs(self) -> Iterator[tuple[bytes, dict[str, Any]]]:
        def run_rows(run: Path) -> Iterator[tuple[bytes, dict[str, Any]]]:
            with open(run.with_suffix(".jsonl"), "rb") as lines:
                for batch in pq.ParquetFile(run.with_suffix(".parquet")).iter_batches(batch_size=10_000):
                    for row in batch.to_pylist():
                        yield lines.read(row["length"]), row

        return heapq.merge(*(run_rows(run) for run in self._runs), key=lambda kept: STORED_ORDER(kept[1]))

    def finish(self, pii: Counter[str]) -> ShardResult:
        if self._runs:
            self._spill()
            kept = self._merged_runs()
        else:
            kept = self._sorted_held()
        self._write_sorted(kept, self.directory / "examples.jsonl", self.directory / "features.parquet")
        for run in self._runs:
            run.with_suffix(".jsonl").unlink()
            run.with_suffix(".parquet").unlink()
        result = self.result
        result.rejected = {stage: dict(sorted(counts.items())) for stage, counts in self.rejected_by.items()}
        result.pii = dict(sorted(pii.items()))
        result.check()
        (self.directory / "result.json").write_bytes(orjson.dumps(asdict(result)))
        return result


def _write_shard(shard: Shard, settings: ShardSettings, directory: Path) -> ShardResult:
    """The fused pass: every record through every per-record stage, each output written once."""
    encoding = get_encoding(settings.encoding)
    result = ShardResult(shard.name, shard.index, str(directory))
    pii: Counter[str] = Counter()
    with ShardFiles(result, directory, SHARD_FEATURE_SCHEMA) as files:
        for ordinal, item in enumerate(shard_items(shard, settings.extract)):
            result.records_read += 1
            if isinstance(item, Rejection):
                files.reject("extract", **item.to_dict())
                continue
            assert isinstance(item, Candidate)
            example, stats = normalize_example(item.example, settings.transform)
            result.trimmed_turns += stats.trimmed_turns
            result.merged_turns += stats.merged_turns
            pii.update(stats.pii)
            try:
                tokens, assistant = check_example(example, encoding, settings.training_context,
                                                  max_record_depth=settings.extract.max_record_depth)
            except ExampleRejected as exc:
                files.reject("quality", item.source, item.loc, exc.reason, exc.detail, example)
                continue
            content, conversation = example_digests(example)
            row = feature_row(example, source=item.source, loc=item.loc,
                              split=split_for(conversation, settings.validation_fraction), tokens=tokens,
                              assistant_tokens=assistant, pii=sum(stats.pii.values()), content_sha256=content)
            files.keep(example, row, ordinal)
    return files.finish(pii)


def stored_result(shard: Shard, settings_fingerprint: str, work_dir: Path) -> Path | None:
    """The result.json of the shard's stored result, if a run stored one for these bytes and settings."""
    key = shard_key(shard, settings_fingerprint)
    result = work_dir / "shards" / key / "result.json" if key else None
    return result if result is not None and result.exists() else None


def prepare_shard(shard: Shard, settings: ShardSettings, work_dir: Path,
                  write: Callable[[Shard, Any, Path], ShardResult] = _write_shard) -> ShardResult:
    """Return the shard's result, reusing a stored one for the same bytes and settings.

    `write` is the fused pass (preference pairs bring their own: tasks/preference_shard.py).

    A shard is written to a temporary folder and renamed into place only when complete, so a
    shard that fails leaves nothing a later run could take for a finished result.
    """
    fingerprint = settings.fingerprint()
    if (stored := stored_result(shard, fingerprint, work_dir)) is not None:
        return ShardResult(**{**orjson.loads(stored.read_bytes()), "shard": shard.name, "index": shard.index,
                              "directory": str(stored.parent), "reused": True})
    key = shard_key(shard, fingerprint)
    shards_dir = work_dir / "shards"
    final = shards_dir / (key or f"sql-{uuid.uuid4().hex}")
    temporary = shards_dir / f".{final.name}.{uuid.uuid4().hex[:8]}.partial"
    try:
        result = write(shard, settings, temporary)
        try:
            os.rename(temporary, final)
        except OSError:  # another run finished the same shard first: its result is the same
            shutil.rmtree(temporary, ignore_errors=True)
    except Exception as exc:
        shutil.rmtree(temporary, ignore_errors=True)
        code = (exc.exit_code if isinstance(exc, FtflowError)
                else EnvironmentFailure.exit_code if isinstance(exc, OSError) else 1)  # e.g. a source deleted
        cause = EnvironmentFailure.from_os_error(exc, where=shards_dir) if isinstance(exc, OSError) else exc
        raise ShardFailed(f"shard {shard.name} ({shard.source}) failed: {cause}", exit_code=code) from exc
    result.directory = str(final)
    return result


# --- tasks ---------------------------------------------------------------------------------------


def start_shard_worker() -> None:
    """Worker initializer: the worker ends with its parent, and exits without the interpreter's
    final collections (ftflow/process_exit.py), which the pool's shutdown would wait for; its
    log records go to the flow run only, never to the terminal (ftflow/terminal.py)."""
    from ftflow.process_exit import exit_with_parent, skip_final_collections
    from ftflow.terminal import run_logs_only

    exit_with_parent()
    skip_final_collections()
    run_logs_only()


def _bytes_to_read(shard: Shard) -> int:
    """About how many bytes preparing the shard reads (a whole file, for a part of a Parquet file)."""
    if shard.kind == "sql":
        return 1 << 62  # unknown, and a table can be large: worth a worker
    size = Path(shard.source).stat().st_size
    return (shard.end if shard.end is not None else size) - shard.start


def shards_to_prepare_here(parameters: dict[str, Any], shard_bytes: int = DEFAULT_SHARD_BYTES) -> set[Shard]:
    """Of the shards a mapped shard task is given, those not worth a worker process: the ones
    whose result is stored already, and those left to prepare if they are one shard or less
    than shard_bytes in all."""
    def value(name: str) -> Any:
        return getattr(parameters.get(name), "value", parameters.get(name))  # unwrap `unmapped`

    shards, settings, work_dir = value("shard"), value("settings"), value("work_dir")
    if not isinstance(shards, list) or not isinstance(settings, ShardSettings) or work_dir is None:
        return set()
    fingerprint = settings.fingerprint()
    stored = {shard for shard in shards if stored_result(shard, fingerprint, Path(work_dir)) is not None}
    to_prepare = [shard for shard in shards if shard not in stored]
    if len(to_prepare) <= 1 or sum(_bytes_to_read(shard) for shard in to_prepare) < shard_bytes:
        return stored | set(to_prepare)
    return stored


class ShardProcessPool(ProcessPoolTaskRunner):
    """Prefect's process pool whose workers report to this process's Prefect server, and die with it.

    Without PREFECT_API_URL, Prefect runs a temporary server for the command; each worker
    process would start one of its own (seconds each, and task runs recorded elsewhere).
    Workers inherit the environment at start, so the server's URL is put there first.

    A worker process takes seconds to start (it imports Prefect and the stages). Shards whose
    result is stored already, and shards left to prepare that are only one or less than
    shard_bytes in all, run on threads of this process instead (`shards_to_prepare_here`): a
    small input starts no worker, nor does a re-run of grown input for its one new range.
    """

    def __init__(self, max_workers: int | None = None, shard_bytes: int = DEFAULT_SHARD_BYTES,
                 **options: Any) -> None:
        from prefect.task_runners import ThreadPoolTaskRunner

        options.setdefault("initializer", start_shard_worker)
        super().__init__(max_workers=max_workers, **options)
        self._shard_bytes = shard_bytes
        self._here = ThreadPoolTaskRunner(max_workers=self._max_workers)
        self._shards_here: set[Shard] = set()

    def duplicate(self) -> ShardProcessPool:
        copy = super().duplicate()  # Prefect runs each flow run on a copy of its runner
        copy._shard_bytes = self._shard_bytes
        return copy

    def __enter__(self) -> ShardProcessPool:
        super().__enter__()
        self._here.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._here.__exit__(*exc)
        super().__exit__(*exc)

    def map(self, task: Any, parameters: dict[str, Any], wait_for: Any = None) -> Any:
        self._shards_here = shards_to_prepare_here(parameters, self._shard_bytes)
        return super().map(task, parameters, wait_for)

    def submit(self, task: Any, parameters: dict[str, Any], wait_for: Any = None, dependencies: Any = None) -> Any:
        from prefect.context import FlowRunContext
        from prefect.settings import get_current_settings

        if parameters.get("shard") in self._shards_here:
            return self._here.submit(task, parameters, wait_for, dependencies)
        context = FlowRunContext.get()
        if context is not None and get_current_settings().api.url is None and "PREFECT_API_URL" not in os.environ:
            os.environ["PREFECT_API_URL"] = str(context.client.api_url)
        return super().submit(task, parameters, wait_for, dependencies)


def task_runner_for(workers: int | None, dask_address: str | None, shard_bytes: int = DEFAULT_SHARD_BYTES) -> Any:
    """Where shards run: an existing Dask cluster, or local processes (all cores by default;
    see ShardProcessPool for the shards it keeps in this process)."""
    if dask_address:
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise ConfigError("--dask-address needs prefect-dask: pip install 'ftflow[dask]'") from None
        return DaskTaskRunner(address=dask_address)
    if workers == 1:
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=1)
    return ShardProcessPool(max_workers=workers or os.cpu_count(), shard_bytes=shard_bytes)


# prepare's own task runner; a flow run on it takes its runner from its settings (`shard_runner`).
DEFAULT_RUNNER = ShardProcessPool()


@contextmanager
def shard_runner(settings: Settings) -> Iterator[None]:
    """Run the current flow run's tasks where the settings say (workers, dask_address, shard_mb),
    when the flow runs on its own task runner: a deployment, a direct call, the CLI, retrain. A
    runner chosen with `prepare.with_options(task_runner=...)` is kept."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow is None or context.flow.task_runner is not DEFAULT_RUNNER:
        yield
        return
    with task_runner_for(settings.workers, settings.dask_address, settings.shard_bytes) as runner, \
            context.model_copy(update={"task_runner": runner}):
        yield


@task(name="plan-shards", cache_policy=NO_CACHE)
def plan_input(sources: list[str], options: ExtractOptions, shard_bytes: int, work_dir: str) -> Plan:
    """Return the shards of the input and a fingerprint of each source; warn of each unreadable match.

    Files are cut where the last plan in work_dir cut them, as far as they are unchanged, so an
    appended file re-prepares only its new bytes.
    """
    plan = plan_shards(sources, options, shard_bytes, CutHistory(Path(work_dir) / "cuts"))
    for message in plan.skipped_sources:
        get_run_logger().warning(message)
    return plan


@task(name="prepare-shard", task_run_name="prepare-shard-{shard.name}", cache_policy=NO_CACHE)
def prepare_shard_task(shard: Shard, settings: ShardSettings, work_dir: str) -> ShardResult:
    """Return one shard's counters; its examples, rejections and features go to the work dir."""
    result = prepare_shard(shard, settings, Path(work_dir))
    get_run_logger().info(result.summary())
    return result
