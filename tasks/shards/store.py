"""The shard store: each shard's prepared result under a key of its bytes, settings and code.

`prepare_shard` returns a stored result for the same bytes (the shard's fingerprint), the same
record pass settings and the same code; else it has the record pass write the shard into a
temporary folder, renamed into place only when complete, so a shard that fails leaves nothing
a later run could take for a finished result. `ShardFiles` is what every record pass writes
through: kept records in the reduce step's order, rejections counted by stage and reason,
feature rows. The reduce step (tasks/reduce.py) de-duplicates across all shards.
"""

from __future__ import annotations

import hashlib
import heapq
import operator
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ftflow.errors import EnvironmentFailure, FtflowError, ShardFailed
from ftflow.jsonl import JsonlWriter, dumps_exact
from tasks.features import FeatureWriter
from tasks.shards.plan import Shard

# Columns the reduce step needs besides the features: where the record's line is, and the
# hash of its exact bytes (which copy of a duplicate is kept must not depend on input order).
LOCATOR_COLUMNS = (pa.field("ordinal", pa.int64()), pa.field("offset", pa.int64()), pa.field("length", pa.int64()),
                   pa.field("line_sha256", pa.string()))
# The order a shard stores its kept examples in: the reduce step's order (tasks/reduce.py,
# SORT_KEYS) within one shard, so the reduce reads each shard's file once, front to back.
STORED_ORDER = operator.itemgetter("content_sha256", "line_sha256", "ordinal")


def shard_schema(feature_schema: pa.Schema) -> pa.Schema:
    """What a shard stores of each kept record: its published feature columns and where it is."""
    return pa.schema([*feature_schema, *LOCATOR_COLUMNS])


class ShardWriter(Protocol):
    """What prepares one shard: a record pass (tasks/passes/)."""

    def fingerprint(self) -> str:
        """Of everything besides the shard's bytes that changes what `write` writes: settings, code."""
        ...

    def write(self, shard: Shard, directory: Path) -> ShardResult: ...


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


class ShardFiles:
    """What a fused pass writes for one shard, each once: kept examples, rejections (counted by
    stage and reason), feature rows; `finish` seals the result into result.json.

    Kept examples are written sorted as the reduce step orders them (content digest, then the
    hash of their bytes, then ordinal), so the reduce reads each shard's file once, front to
    back, instead of seeking to every example. They are sorted in memory; a shard that keeps
    more than SPILL_BYTES (a large file that cannot be split) is sorted in runs on disk, which
    `finish` merges.

    Every record pass writes through it (tasks/passes/).
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
        self.keep_line(dumps_exact(record) + b"\n", row, ordinal)

    def keep_line(self, line: bytes, row: dict[str, Any], ordinal: int) -> None:
        """`keep` for a record already serialised: `line` is its `dumps_exact` bytes and a newline."""
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


def stored_result(shard: Shard, settings_fingerprint: str, work_dir: Path) -> Path | None:
    """The result.json of the shard's stored result, if a run stored one for these bytes and settings."""
    key = shard_key(shard, settings_fingerprint)
    result = work_dir / "shards" / key / "result.json" if key else None
    return result if result is not None and result.exists() else None


def prepare_shard(shard: Shard, record_pass: ShardWriter, work_dir: Path) -> ShardResult:
    """Return the shard's result, reusing a stored one for the same bytes, settings and code.

    A shard is written to a temporary folder and renamed into place only when complete, so a
    shard that fails leaves nothing a later run could take for a finished result.
    """
    fingerprint = record_pass.fingerprint()
    if (stored := stored_result(shard, fingerprint, work_dir)) is not None:
        return ShardResult(**{**orjson.loads(stored.read_bytes()), "shard": shard.name, "index": shard.index,
                              "directory": str(stored.parent), "reused": True})
    key = shard_key(shard, fingerprint)
    shards_dir = work_dir / "shards"
    final = shards_dir / (key or f"sql-{uuid.uuid4().hex}")
    temporary = shards_dir / f".{final.name}.{uuid.uuid4().hex[:8]}.partial"
    try:
        result = record_pass.write(shard, temporary)
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


@task(name="prepare-shard", task_run_name="prepare-shard-{shard.name}", cache_policy=NO_CACHE)
def prepare_shard_task(shard: Shard, record_pass: ShardWriter, work_dir: str) -> ShardResult:
    """Return one shard's counters; its records, rejections and features go to the work dir."""
    result = prepare_shard(shard, record_pass, Path(work_dir))
    get_run_logger().info(result.summary())
    return result
