"""Reduce: de-duplicate across all shards and write train/validation in canonical order.

Examples are written sorted by content digest, so `dataset_sha256` depends only on the set
of examples, never on input order, shard size or the number of workers. Of the copies of a
duplicate, the one with the smallest hash of its exact bytes is kept (ties by shard and
ordinal): copies that differ only in case or whitespace then give the same output whatever
came first. Memory holds the feature rows (numbers and digests, no text) of one partition of
the digest space at a time; the text is copied from the shards' files, which hold their
examples in this same order (tasks/shards/store.py, ShardFiles), so each is read once, front to back.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from prefect import task

from ftflow.caching import RUN_CACHE
from ftflow.errors import FtflowError
from ftflow.jsonl import JsonlWriter, read_chunks
from ftflow.outputs import writing
from tasks.features import FEATURE_SCHEMA, FeatureWriter
from tasks.shards.store import ShardResult

if TYPE_CHECKING:
    from tasks.passes.base import RecordPass

PARTITION_ROWS = 250_000  # kept examples per partition of the digest space (about 150 MiB of rows)
# Within one shard this is the order the shard stored its examples in (tasks/shards/store.py, STORED_ORDER).
SORT_KEYS = [("content_sha256", "ascending"), ("line_sha256", "ascending"), ("shard", "ascending"),
             ("ordinal", "ascending")]


@dataclass
class ReduceResult:
    train: int
    validation: int
    duplicates_removed: int
    train_path: str
    validation_path: str
    duplicates_path: str
    features_path: str
    train_sha256: str
    validation_sha256: str


class HashedOutput:
    """A file written front to back whose sha256 a helper thread computes as it grows.

    After each partition the reduce calls `hash_written`: the bytes written so far are read
    back (from the page cache) and hashed on the thread, which hashlib and file reads let run
    beside the next partition's work. So the report does not read 1.1 GB of train/validation
    again at the end (0.6 to 1.2 s at 1M here): only the last partition is hashed after it.
    """

    def __init__(self, path: Path, hashing: ThreadPoolExecutor) -> None:
        self.path = path
        self.file = open(path, "wb", buffering=1 << 20)
        self._reader = open(path, "rb")
        self._digest = hashlib.sha256()
        self._hashing = hashing
        self._hashed: list[Future[Any]] = []

    def hash_written(self) -> None:
        self.file.flush()
        self._hashed.append(self._hashing.submit(self._hash_until, self.file.tell()))

    def _hash_until(self, end: int) -> None:
        for chunk in read_chunks(self._reader, end - self._reader.tell(), 4 << 20):
            self._digest.update(chunk)
        if (position := self._reader.tell()) < end:  # a bug of ours (or the file was cut under us)
            raise FtflowError(f"{self.path} ended at byte {position} while hashing it up to byte {end}")

    def finish(self) -> str:
        """Close the file; return its sha256."""
        self.hash_written()
        self.file.close()
        for hashed in self._hashed:
            hashed.result()
        self._reader.close()
        return self._digest.hexdigest()

    def close(self) -> None:
        self.file.close()
        self._reader.close()


def digest_partitions(rows: int, partition_rows: int) -> list[tuple[str, str | None]]:
    """Ranges [low, high) of the digest's first two hex digits, each holding about partition_rows."""
    count = min(256, max(1, -(-rows // partition_rows)))
    bounds = [f"{i * 256 // count:02x}" for i in range(count)]
    return [(low, high) for low, high in zip(bounds, [*bounds[1:], None], strict=True)]


def _read_partition(results: list[ShardResult], low: str, high: str | None) -> pa.Table:
    condition = pc.field("content_sha256") >= low
    if high is not None:
        condition &= pc.field("content_sha256") < high
    tables = []
    for number, result in enumerate(results):
        table = pq.read_table(Path(result.directory) / "features.parquet", filters=condition)
        tables.append(table.append_column("shard", pa.array([number] * len(table), pa.int32())))
    return pa.concat_tables(tables).sort_by(SORT_KEYS)


def dedup_and_split(
    results: list[ShardResult], staged_dir: Path, out_dir: Path, partition_rows: int = PARTITION_ROWS,
    schema: pa.Schema = FEATURE_SCHEMA,
) -> ReduceResult:
    """Write train/validation (to staged_dir, until the gates pass), duplicates and features."""
    results = sorted(results, key=lambda r: r.index)
    staged_dir.mkdir(parents=True, exist_ok=True)
    staged = {name: os.path.relpath(staged_dir / f"{name}.jsonl", out_dir) for name in ("train", "validation")}
    digests: dict[str, str] = {}
    with writing(out_dir, ("duplicates.jsonl", "features.parquet", *staged.values()), digests):
        split = _dedup_and_split(results, staged_dir, out_dir, partition_rows, schema)
        digests.update({staged["train"]: split.train_sha256, staged["validation"]: split.validation_sha256})
    return split


def _dedup_and_split(
    results: list[ShardResult], staged_dir: Path, out_dir: Path, partition_rows: int, schema: pa.Schema
) -> ReduceResult:
    opened = ExitStack()
    # Each shard's examples are stored in the order this step visits them (ShardFiles): every
    # file is read once, front to back, whatever the partitions.
    readers = [opened.enter_context(open(Path(r.directory) / "examples.jsonl", "rb", buffering=1 << 20))
               for r in results]
    positions = [0] * len(results)
    counts = {"train": 0, "validation": 0}
    try:
        with (
            ThreadPoolExecutor(1, thread_name_prefix="hash-splits") as hashing,
            JsonlWriter(out_dir / "duplicates.jsonl") as duplicates,
            FeatureWriter(out_dir / "features.parquet", schema) as features,
        ):
            splits = {name: HashedOutput(staged_dir / f"{name}.jsonl", hashing) for name in ("train", "validation")}
            for output in splits.values():
                opened.callback(output.close)
            outputs = {name: output.file for name, output in splits.items()}
            for low, high in digest_partitions(sum(r.kept for r in results), partition_rows):
                table = _read_partition(results, low, high)
                if not len(table):
                    continue
                digests = table.column("content_sha256")
                repeated = pc.equal(digests.slice(1), digests.slice(0, len(table) - 1))
                is_copy = pa.concat_arrays([pa.array([False]), repeated.combine_chunks()])
                for shard, offset, length, split, copy in zip(
                    table.column("shard").to_pylist(), table.column("offset").to_pylist(),
                    table.column("length").to_pylist(), table.column("split").to_pylist(), is_copy.to_pylist(),
                    strict=True,
                ):
                    if offset != positions[shard]:  # a bug of ours, never bad data
                        raise FtflowError(f"shard {results[shard].shard}: example at byte {offset} read out of order")
                    line = readers[shard].read(length)
                    positions[shard] += length
                    if not copy:
                        outputs[split].write(line)
                        counts[split] += 1
                for output in splits.values():
                    output.hash_written()
                kept, copies = table.filter(pc.invert(is_copy)), table.filter(is_copy)
                for row in copies.select(["source", "loc", "content_sha256"]).to_pylist():
                    duplicates.write(row)
                features.add_table(kept)
            sha256s = {name: output.finish() for name, output in splits.items()}
    finally:
        opened.close()
    return ReduceResult(
        train=counts["train"],
        validation=counts["validation"],
        duplicates_removed=duplicates.count,
        train_path=str(splits["train"].path),
        validation_path=str(splits["validation"].path),
        duplicates_path=str(duplicates.path),
        features_path=str(features.path),
        train_sha256=sha256s["train"],
        validation_sha256=sha256s["validation"],
    )


@task(name="dedup-and-split", cache_policy=RUN_CACHE)
def reduce_shards(results: list[ShardResult], staged_dir: str, out_dir: str, record_pass: RecordPass) -> ReduceResult:
    """Return the split counts; train/validation wait in staged_dir until the gates pass."""
    return dedup_and_split(results, Path(staged_dir), Path(out_dir), schema=record_pass.feature_schema)
