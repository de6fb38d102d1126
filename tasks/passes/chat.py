"""The chat pass: raw conversations -> chat-format fine-tuning examples.

Per record: read (tasks/readers/, by the shard's kind) -> normalise (roles, whitespace, turn
merging and trimming, PII masking, the system prompt: tasks/transform.py) -> per-example
checks and token counts (tasks/checks.py) -> content and conversation digests (de-duplication,
split) -> the example's feature row. Plain files are cut into byte ranges (tasks/shards/plan.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from ftflow.encodings import get_encoding
from tasks.budget import sequence_figures
from tasks.checks import ExampleRejected, check_example
from tasks.extract import reader_for
from tasks.features import FEATURE_SCHEMA, feature_row
from tasks.passes.base import RecordPass
from tasks.readers import Candidate, ExtractOptions, Item, Rejection
from tasks.readers.jsonl import Decoder, decode_record, read_json_lines
from tasks.readers.sql import read_sql
from tasks.readers.table import read_parquet_table
from tasks.readers.transcript import read_transcript_file
from tasks.shards.plan import CutHistory, Plan, Shard, plan_shards
from tasks.shards.store import ShardFiles, ShardResult, shard_schema
from tasks.transform import example_digests, normalize_example, split_for

if TYPE_CHECKING:
    import pandas as pd
    from tiktoken import Encoding

SHARD_SCHEMA = shard_schema(FEATURE_SCHEMA)


def shard_items(shard: Shard, options: ExtractOptions, decode: Decoder = decode_record) -> Iterator[Item]:
    """The records of one shard, with absolute locations (JSON lines each made by `decode`)."""
    path = Path(shard.source)
    if shard.kind == "lines":
        return read_json_lines(path, options, start=shard.start, end=shard.end, first_line=shard.first_line,
                               decode=decode)
    if shard.kind == "transcript":
        return read_transcript_file(path, options, start=shard.start, end=shard.end, first_line=shard.first_line)
    if shard.kind == "parquet":
        groups = list(shard.row_groups) if shard.row_groups is not None else None
        return read_parquet_table(path, options, row_groups=groups, first_line=shard.first_line)
    if shard.kind == "sql":
        return read_sql(options)
    return reader_for(path, options)(path, options)


@dataclass(frozen=True)
class ChatPass(RecordPass):
    """Chat examples for supervised fine-tuning."""

    method: ClassVar[str] = "supervised"
    feature_schema: ClassVar = FEATURE_SCHEMA
    code: ClassVar[tuple[str, ...]] = ("passes/chat.py",)
    budget_columns: ClassVar[list[str] | None] = ["split", "tokens", "assistant_tokens"]

    def plan(self, sources: list[str], shard_bytes: int, history: CutHistory) -> Plan:
        return plan_shards(sources, self.extract, shard_bytes, history)

    def write(self, shard: Shard, directory: Path) -> ShardResult:
        encoding = get_encoding(self.encoding)
        result = ShardResult(shard.name, shard.index, str(directory))
        pii: Counter[str] = Counter()
        with ShardFiles(result, directory, SHARD_SCHEMA) as files:
            for ordinal, item in enumerate(shard_items(shard, self.extract)):
                result.records_read += 1
                if isinstance(item, Rejection):
                    files.reject("extract", **item.to_dict())
                    continue
                assert isinstance(item, Candidate)
                self.prepare_example(item, ordinal, files, pii, encoding)
        return files.finish(pii)

    def prepare_example(self, item: Candidate, ordinal: int, files: ShardFiles, pii: Counter[str],
                        encoding: Encoding) -> None:
        """One record read, stage by stage: normalised, checked and counted, digested, kept or rejected
        (`pii`: the shard's PII counts, added to)."""
        result = files.result
        example, stats = normalize_example(item.example, self.transform)
        result.trimmed_turns += stats.trimmed_turns
        result.merged_turns += stats.merged_turns
        pii.update(stats.pii)
        try:
            tokens, assistant = check_example(example, encoding, self.training_context,
                                              max_record_depth=self.extract.max_record_depth)
        except ExampleRejected as exc:
            files.reject("quality", item.source, item.loc, exc.reason, exc.detail, example)
            return
        content, conversation = example_digests(example)
        row = feature_row(example, source=item.source, loc=item.loc,
                          split=split_for(conversation, self.validation_fraction), tokens=tokens,
                          assistant_tokens=assistant, pii=sum(stats.pii.values()), content_sha256=content)
        files.keep(example, row, ordinal)

    def tally(self, features: pd.DataFrame, over_limit: int) -> tuple[dict[str, int], int]:
        """Every example's tokens; billed: each training example's, clipped to the training context."""
        train = features[features["split"] == "train"]
        tokens = {"total": int(features["tokens"].sum()), "assistant": int(features["assistant_tokens"].sum()),
                  "train": int(train["tokens"].sum()), **sequence_figures(features["tokens"]),
                  "over_limit": over_limit}
        return tokens, int(train["tokens"].clip(upper=self.training_context).sum())

    def gemini_features(self, split_paths: dict[str, str]) -> pd.DataFrame:
        import pandas as pd

        from ftflow.formats.gemini import assistant_tokens, example_tokens
        from ftflow.jsonl import loads_exact

        rows = []
        for name, path in split_paths.items():
            with open(path, "rb") as f:
                for line in f:
                    record = loads_exact(line)
                    rows.append((name, example_tokens(record), assistant_tokens(record)))
        return pd.DataFrame(rows, columns=["split", "tokens", "assistant_tokens"])
