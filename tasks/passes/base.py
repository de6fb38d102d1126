"""The record pass: what prepare does to each record of a shard, one implementation per method.

A record pass is two things in one frozen object, so it can travel to a worker process:
- the settings that shape a shard's output (they key its stored result, with the code);
- the method's steps: how its input is cut into shards (`plan`), the fused pass over one
  shard's records (`write`: read -> normalise -> check -> count -> digests, each output written
  once through ShardFiles), what its budget counts (`tally`, `gemini_features`), and the
  figures its own suite checks (`figures`).

The flow body (flows/prepare.py) is the same for every method; it asks the run's record pass
(`record_pass_for`, tasks/passes/__init__.py) at each of these steps.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import orjson

from ftflow.settings import Settings
from tasks.readers import ExtractOptions
from tasks.transform import TransformOptions

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from tasks.shards.plan import CutHistory, Plan, Shard
    from tasks.shards.store import ShardResult

TASKS_DIR = Path(__file__).resolve().parent.parent
# The code every pass's output depends on (paths under tasks/): a change in any of these files
# invalidates stored shards; each pass adds its own (`code`).
ENGINE_CODE = ("extract.py", "readers/__init__.py", "readers/compressed.py", "readers/jsonl.py", "readers/nested.py",
               "readers/transcript.py", "readers/table.py", "readers/sql.py", "transform.py", "pii.py", "checks.py",
               "features.py", "budget.py", "shards/plan.py", "shards/store.py", "passes/base.py",
               "../ftflow/reading.py", "../ftflow/jsonl.py")


@dataclass(frozen=True)
class RecordPass:
    """Everything besides a shard's bytes that changes what its pass writes, and the pass itself."""

    extract: ExtractOptions
    transform: TransformOptions
    encoding: str
    training_context: int
    validation_fraction: float

    method: ClassVar[str]  # the training method it prepares for: report.json `method`
    feature_schema: ClassVar[pa.Schema]  # the published features.parquet
    code: ClassVar[tuple[str, ...]]  # its own modules, besides ENGINE_CODE
    # The modules whose outputs it writes: its own, or, for a faster engine of another pass, that
    # pass's (the same bytes: a dataset is not made of the engine that wrote it).
    outputs_code: ClassVar[tuple[str, ...] | None] = None
    budget_columns: ClassVar[list[str] | None]  # the feature columns `tally` reads (None: all)

    @classmethod
    def for_model(cls, model: str, extract: ExtractOptions, transform: TransformOptions,
                  validation_fraction: float) -> Self:
        """The pass for a model: its tokenizer and training context from the catalogue."""
        from ftflow.catalog import load_catalog
        from ftflow.encodings import encoding_name_for_model

        return cls(extract, transform, encoding_name_for_model(model), load_catalog().get(model).training_context,
                   validation_fraction)

    @classmethod
    def from_settings(cls, settings: Settings, extract: ExtractOptions | None = None) -> Self:
        """What the resolved settings make of the pass (`extract`: the options with the run's SQL source)."""
        return cls.for_model(settings.model, extract or ExtractOptions.from_settings(settings),
                             TransformOptions.from_settings(settings), settings.validation_fraction)

    def fingerprint(self) -> str:
        """Of the settings and the code that change what `write` writes: keys a stored shard."""
        return self._fingerprint(self.code)

    def outputs_fingerprint(self) -> str:
        """Of the settings and the code its outputs are made of (`outputs_code`): `inputs_sha256`
        (tasks/lineage.py) is the same whichever engine wrote them."""
        return self._fingerprint(self.outputs_code if self.outputs_code is not None else self.code)

    def _fingerprint(self, own_code: tuple[str, ...]) -> str:
        code = hashlib.sha256()
        for name in (*ENGINE_CODE, *own_code):
            code.update((TASKS_DIR / name).read_bytes())
        settings = orjson.dumps({"method": self.method, **asdict(self)}, option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(settings + code.digest()).hexdigest()

    def plan(self, sources: list[str], shard_bytes: int, history: CutHistory) -> Plan:
        """The shards of the input (`history`: where the last plan cut each file)."""
        raise NotImplementedError

    def write(self, shard: Shard, directory: Path) -> ShardResult:
        """The fused pass over one shard: every record kept or rejected, each output written once."""
        raise NotImplementedError

    def tally(self, features: pd.DataFrame, over_limit: int) -> tuple[dict[str, int], int]:
        """The budget's token figures of a de-duplicated features frame, and the tokens billed per epoch."""
        raise NotImplementedError

    def gemini_features(self, split_paths: dict[str, str]) -> pd.DataFrame:
        """The columns `tally` reads, of each record of the split files, by Gemini's documented estimate."""
        raise NotImplementedError

    def figures(self, features_path: str) -> dict[str, dict[str, Any]]:
        """Suite name -> the one-row figures the method's own suite checks, of the published
        features (none: {})."""
        return {}
