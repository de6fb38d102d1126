"""Quarantine: move examples that a stage after de-duplication rejects out of train/validation.

Stages that judge the de-duplicated, split examples (moderation with `reject`, the provider
rules) hand per-split verdicts `{line index: (reason, detail)}`; `quarantine` writes those lines
to the stage's rejected file (`{"source", "loc", "reason", "detail", "record"}`, as every
rejection), rewrites the split files without them, drops their rows from `features.parquet`
and returns the split with the new counts and digests, so that
`records_read == train + validation + sum(rejected) + duplicates_removed` still holds.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ftflow.jsonl import dumps_exact, loads_exact
from ftflow.outputs import writing
from tasks.reduce import ReduceResult

SPLITS = ("train", "validation")
Verdicts = dict[str, dict[int, tuple[str, str]]]  # split -> line index -> (reason, detail)


@dataclass
class Quarantined:
    """What one stage moved out: the split after it, counts by reason, and its rejected file (None: nothing)."""

    split: ReduceResult
    rejected: dict[str, int] = field(default_factory=dict)
    rejected_path: str | None = None


def rewrite_split(path: Path, drop: set[int]) -> tuple[int, str]:
    """Write the split file without the lines `drop`; return (lines kept, sha256 of the new file)."""
    digest, kept = hashlib.sha256(), 0
    temporary = path.with_suffix(".quarantine")
    with open(path, "rb") as source, open(temporary, "wb") as target:
        for index, line in enumerate(source):
            if index not in drop:
                target.write(line)
                digest.update(line)
                kept += 1
    os.replace(temporary, path)
    return kept, digest.hexdigest()


def quarantine(split: ReduceResult, verdicts: Verdicts, rejected_path: Path) -> Quarantined:
    """Move the lines named in `verdicts` from train/validation into `rejected_path` (written only when any)."""
    if not any(verdicts.get(name) for name in SPLITS):
        return Quarantined(split=split)
    paths = {"train": Path(split.train_path), "validation": Path(split.validation_path)}
    # The files rewritten here are ftflow's outputs: their new digests go into the folder's manifest,
    # or the next run would take them for files somebody else changed (ftflow/outputs.py).
    out_dir = Path(split.features_path).parent
    rewritten = [os.path.relpath(path, out_dir) for path in (*paths.values(), Path(split.features_path),
                                                              rejected_path)]
    with writing(out_dir, rewritten):
        return _quarantine(split, verdicts, paths, rejected_path)


def _quarantine(split: ReduceResult, verdicts: Verdicts, paths: dict[str, Path], rejected_path: Path) -> Quarantined:
    features = pq.read_table(split.features_path)
    rows = {name: pc.indices_nonzero(pc.equal(features.column("split"), name)).to_pylist() for name in SPLITS}
    drop_rows: set[int] = set()
    reasons: Counter[str] = Counter()
    with open(rejected_path, "wb") as out:
        for name in SPLITS:
            found = verdicts.get(name, {})
            with open(paths[name], "rb") as source:
                for index, line in enumerate(source):
                    if (verdict := found.get(index)) is None:
                        continue
                    reason, detail = verdict
                    row = rows[name][index]
                    drop_rows.add(row)
                    reasons[reason] += 1
                    out.write(dumps_exact({
                        "source": features.column("source")[row].as_py(), "loc": features.column("loc")[row].as_py(),
                        "reason": reason, "detail": detail, "record": loads_exact(line)}) + b"\n")
    kept = {name: rewrite_split(paths[name], set(verdicts.get(name, {}))) for name in SPLITS}
    pq.write_table(features.filter(pa.array([i not in drop_rows for i in range(len(features))])), split.features_path)
    return Quarantined(
        split=replace(split, train=kept["train"][0], validation=kept["validation"][0],
                      train_sha256=kept["train"][1], validation_sha256=kept["validation"][1]),
        rejected=dict(sorted(reasons.items())), rejected_path=str(rejected_path))
