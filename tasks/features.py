"""Features: numbers about each kept example (never its text), and the summary drift is judged by.

A shard writes one `feature_row` per kept example (`FeatureWriter`, Parquet in bounded
batches); the quality suites (tasks/quality.py) run on these rows. `feature_summary` is what a
run stores for the next one, and `drift_changes` how far a run moved from the last successful
one, within the bounds of `DriftOptions`.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from ftflow.settings import Settings, default

if TYPE_CHECKING:
    import pandas as pd

FEATURE_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("loc", pa.string()),
        ("split", pa.string()),
        ("n_messages", pa.int32()),
        ("n_user", pa.int32()),
        ("n_assistant", pa.int32()),
        ("has_system", pa.bool_()),
        ("last_role", pa.string()),
        ("tokens", pa.int64()),
        ("assistant_tokens", pa.int64()),
        ("pii", pa.int32()),
        ("content_sha256", pa.string()),
    ]
)


def feature_row(
    example: dict[str, Any], *, source: str, loc: str, split: str, tokens: int, assistant_tokens: int, pii: int,
    content_sha256: str,
) -> dict[str, Any]:
    """One row of FEATURE_SCHEMA for a kept example: numbers about it, no text."""
    roles = [m["role"] for m in example["messages"]]
    return {
        "source": source,
        "loc": loc,
        "split": split,
        "n_messages": len(roles),
        "n_user": roles.count("user"),
        "n_assistant": roles.count("assistant"),
        "has_system": "system" in roles,
        "last_role": roles[-1],
        "tokens": tokens,
        "assistant_tokens": assistant_tokens,
        "pii": pii,
        "content_sha256": content_sha256,
    }


class FeatureWriter:
    """Write feature rows to Parquet, in bounded batches."""

    BATCH = 10_000

    def __init__(self, path: Path, schema: pa.Schema = FEATURE_SCHEMA) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.schema = schema
        self._rows: list[dict[str, Any]] = []
        self._writer = pq.ParquetWriter(path, schema)

    def add(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        if len(self._rows) >= self.BATCH:
            self._flush()

    def add_table(self, table: pa.Table) -> None:
        """Append rows that are already a table (with at least the schema's columns)."""
        self._flush()
        self._writer.write_table(table.select(self.schema.names).cast(self.schema))

    def _flush(self) -> None:
        if self._rows:
            # Column by column: several times faster than Table.from_pylist, the same table.
            names = self.schema.names
            try:
                columns = zip(*map(operator.itemgetter(*names), self._rows), strict=True)
                table = pa.Table.from_pydict(dict(zip(names, map(list, columns), strict=True)), schema=self.schema)
            except KeyError:  # a row without some column: null there, as from_pylist has it
                table = pa.Table.from_pylist(self._rows, schema=self.schema)
            self._writer.write_table(table)
            self._rows = []

    def __enter__(self) -> FeatureWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._flush()
        self._writer.close()


@dataclass(frozen=True)
class DriftOptions:
    """How far this run's features may move from the last successful run's before the gate fails.

    `previous` is that run's `feature_summary` (None: first run, drift is not checked).
    Token changes are relative (0.5: p50 or p95 moved by half); shares are absolute points;
    the role mix is compared by total variation distance (0: same mix, 1: disjoint).
    """

    previous: dict[str, Any] | None = None
    max_token_change: float = default("drift_max_token_change")
    max_role_mix_shift: float = default("drift_max_role_mix_shift")
    max_pii_share_change: float = default("drift_max_pii_share_change")
    max_rejected_share_change: float = default("drift_max_rejected_share_change")
    max_duplicate_share_change: float = default("drift_max_duplicate_share_change")

    @classmethod
    def from_settings(cls, settings: Settings, previous: dict[str, Any] | None = None) -> DriftOptions:
        return cls(previous=previous, max_token_change=settings.drift_max_token_change,
                   max_role_mix_shift=settings.drift_max_role_mix_shift,
                   max_pii_share_change=settings.drift_max_pii_share_change,
                   max_rejected_share_change=settings.drift_max_rejected_share_change,
                   max_duplicate_share_change=settings.drift_max_duplicate_share_change)

    def parameters(self) -> dict[str, float]:
        return {f"drift_{name}": getattr(self, name) for name in (
            "max_token_change", "max_role_mix_shift", "max_pii_share_change", "max_rejected_share_change",
            "max_duplicate_share_change")}


def feature_summary(features: pd.DataFrame, totals: dict[str, Any]) -> dict[str, Any]:
    """The figures the next run's drift checks compare against (stored in report.json)."""
    kept = len(features)
    messages = int(features["n_messages"].sum())
    roles = {"system": int(features["has_system"].sum()), "user": int(features["n_user"].sum()),
             "assistant": int(features["n_assistant"].sum())}
    roles["tool"] = messages - sum(roles.values())
    deduplicated = kept + totals["duplicates_removed"]
    return {
        "examples": kept,
        "tokens_p50": round(float(features["tokens"].quantile(0.5)), 2) if kept else 0.0,
        "tokens_p95": round(float(features["tokens"].quantile(0.95)), 2) if kept else 0.0,
        "role_mix": {role: round(n / messages, 4) if messages else 0.0 for role, n in roles.items()},
        "pii_share": round(float((features["pii"] > 0).mean()), 4) if kept else 0.0,
        "rejected_share": round(totals["rejected_share"], 4),
        "duplicate_share": round(totals["duplicates_removed"] / deduplicated, 4) if deduplicated else 0.0,
    }


def drift_changes(current: dict[str, Any], previous: dict[str, Any]) -> dict[str, float]:
    """One row for the `drift` suite: how far each figure moved since the previous summary."""

    def relative(key: str) -> float:
        return round(abs(current[key] - previous[key]) / max(previous[key], 1.0), 4)

    roles = current["role_mix"].keys() | previous["role_mix"].keys()
    return {
        "p50_tokens_change": relative("tokens_p50"),
        "p95_tokens_change": relative("tokens_p95"),
        "role_mix_shift": round(sum(abs(current["role_mix"].get(r, 0.0) - previous["role_mix"].get(r, 0.0))
                                    for r in roles) / 2, 4),
        **{f"{key}_change": round(abs(current[key] - previous[key]), 4)
           for key in ("pii_share", "rejected_share", "duplicate_share")},
    }
