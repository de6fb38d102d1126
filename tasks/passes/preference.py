"""The preference pass: rated or paired answers -> DPO preference pairs, shard by shard.

Each input file is one shard. Rated answers must be grouped per conversation before they
pair up (best against worst), and a conversation's rows may sit anywhere in the file: cutting
the file into byte ranges could split a conversation across two shards and pair it twice or
never. Preference files are small next to raw chat logs, so whole-file shards cost little.

Per record: raw JSON line / table row -> shape -> pair (prefix split, single-turn outputs,
input ends on a user turn) -> PII masking and system prompt -> pair checks (identical outputs,
the chat checks of each sequence: keys, roles, special tokens, token limit) -> token counts,
pair digest (de-duplication) and conversation digest (split). The reduce step
(tasks/reduce.py) de-duplicates pairs across shards and writes them in canonical order, as
for chat examples.

Counting, in pairs (docs/rejections.md): a `chosen`/`rejected` record or an OpenAI preference
line is one record; a rated row that cannot be read (no shape, bad rating) is one record; the
readable rated rows of one conversation together are one record, kept as one pair or rejected
once. So `records_read == train + validation + sum(rejected) + duplicates_removed` in pairs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import pyarrow as pa

from ftflow.catalog import load_catalog
from ftflow.encodings import get_encoding
from ftflow.errors import ConfigError
from ftflow.jsonl import loads_exact
from ftflow.settings import Settings, default
from tasks.budget import sequence_figures
from tasks.checks import ExampleRejected
from tasks.features import FEATURE_SCHEMA
from tasks.passes.base import RecordPass
from tasks.pii import scan_message
from tasks.preference import (
    PairRejected,
    PairTokens,
    PreferenceFigures,
    PreferencePair,
    RatedAnswer,
    check_pair,
    conversation_key,
    detect_shape,
    near_identical,
    pair_digest,
    pair_from_ratings,
    rated_answer,
    to_pair,
)
from tasks.readers import ExtractOptions, Rejection
from tasks.readers.preference import read_preference_file
from tasks.shards.plan import CutHistory, Plan, Shard, plan_whole_files
from tasks.shards.store import ShardFiles, ShardResult, shard_schema
from tasks.transform import TransformOptions, apply_system_prompt, split_for

if TYPE_CHECKING:
    import pandas as pd

PAIR_COLUMNS = [
    pa.field("shape", pa.string()),
    pa.field("input_tokens", pa.int64()),
    pa.field("preferred_tokens", pa.int64()),
    pa.field("non_preferred_tokens", pa.int64()),
    pa.field("trained_tokens", pa.int64()),
    pa.field("near_identical", pa.bool_()),
    pa.field("preferred_longer", pa.bool_()),
]
PAIR_FEATURE_SCHEMA = pa.schema([*FEATURE_SCHEMA, *PAIR_COLUMNS])  # the published features.parquet
SHARD_SCHEMA = shard_schema(PAIR_FEATURE_SCHEMA)


def clean_pair(pair: PreferencePair, options: TransformOptions) -> tuple[PreferencePair, Counter[str]]:
    """Strip and PII-mask every message of input and outputs; put in the system prompt."""
    found: Counter[str] = Counter()

    def clean(message: dict[str, Any]) -> dict[str, Any]:
        if isinstance(message.get("content"), str):
            message = {**message, "content": message["content"].strip()}
        if options.pii != "off":  # the same scan normalize_example makes: content, text parts, names, tool calls
            message, _ = scan_message(message, options.pii, options.pii_regions, found)
        return message

    messages = [clean(m) for m in pair.input["messages"]]
    if options.system_prompt is not None:
        messages = apply_system_prompt(messages, options.system_prompt, options.system_prompt_mode)
    cleaned = PreferencePair({**pair.input, "messages": messages}, [clean(m) for m in pair.preferred],
                             [clean(m) for m in pair.non_preferred])
    return cleaned, found


def pair_feature_row(pair: PreferencePair, tokens: PairTokens, *, shape: str, source: str, loc: str, split: str,
                     pii: int) -> dict[str, Any]:
    """Numbers about a kept pair, no text. `tokens` is its longer sequence (the token-limit check)."""
    roles = [m.get("role") for m in pair.input["messages"]] + ["assistant"]
    return {
        "source": source, "loc": loc, "split": split, "n_messages": len(roles), "n_user": roles.count("user"),
        "n_assistant": roles.count("assistant"), "has_system": "system" in roles, "last_role": "assistant",
        "tokens": tokens.input + max(tokens.preferred, tokens.non_preferred),
        "assistant_tokens": tokens.preferred, "pii": pii, "content_sha256": pair_digest(pair), "shape": shape,
        "input_tokens": tokens.input, "preferred_tokens": tokens.preferred,
        "non_preferred_tokens": tokens.non_preferred, "trained_tokens": tokens.trained,
        "near_identical": near_identical(pair), "preferred_longer": tokens.preferred > tokens.non_preferred,
    }


def figures_of(features: Any) -> PreferenceFigures:
    """Figures of the kept training pairs (a features frame after de-duplication)."""
    train = features[features["split"] == "train"]
    return PreferenceFigures(pairs=len(train), near_identical=int(train["near_identical"].sum()),
                             preferred_longer=int(train["preferred_longer"].sum()))


@dataclass(frozen=True)
class PreferencePass(RecordPass):
    """Preference pairs for DPO fine-tuning; one shard per file (see the module docstring for why)."""

    min_rating_margin: float = default("dpo_min_rating_margin")

    method: ClassVar[str] = "dpo"
    feature_schema: ClassVar = PAIR_FEATURE_SCHEMA
    code: ClassVar[tuple[str, ...]] = ("passes/preference.py", "preference.py", "readers/preference.py")
    budget_columns: ClassVar[list[str] | None] = None

    @classmethod
    def for_model(cls, model: str, extract: ExtractOptions, transform: TransformOptions,
                  validation_fraction: float) -> Self:
        """The pass for a model that takes DPO (a price for it in the table), else a ConfigError."""
        if load_catalog().get(model).dpo_training is None:
            takes = ", ".join(sorted(m.name for m in load_catalog().models.values() if m.dpo_training is not None))
            raise ConfigError(f"model {model!r} does not take DPO fine-tuning; use one of: {takes}")
        return super().for_model(model, extract, transform, validation_fraction)

    @classmethod
    def from_settings(cls, settings: Settings, extract: ExtractOptions | None = None) -> Self:
        return replace(super().from_settings(settings, extract), min_rating_margin=settings.dpo_min_rating_margin)

    def plan(self, sources: list[str], shard_bytes: int, history: CutHistory) -> Plan:
        if self.extract.sql_url or self.extract.query:
            raise ConfigError("method dpo reads preference pairs from files; --sql-url and --query read chat data")
        return plan_whole_files(sources)

    def write(self, shard: Shard, directory: Path) -> ShardResult:
        """One file's records -> pairs (rated rows grouped per conversation), each output written once."""
        encoding = get_encoding(self.encoding)
        result = ShardResult(shard.name, shard.index, str(directory))
        pii: Counter[str] = Counter()
        rated: dict[str, list[tuple[str, RatedAnswer, Any]]] = {}
        with ShardFiles(result, directory, SHARD_SCHEMA) as files:
            def reject(stage: str, loc: str, reason: str, detail: str, record: Any) -> None:
                files.reject(stage, shard.source, loc, reason, detail, record)

            def keep(pair: PreferencePair, shape: str, loc: str, record: Any) -> None:
                pair, found = clean_pair(pair, self.transform)
                pii.update(found)
                try:
                    tokens = check_pair(pair, encoding, self.training_context,
                                        max_record_depth=self.extract.max_record_depth)
                except (PairRejected, ExampleRejected) as exc:
                    reject("quality", loc, exc.reason, exc.detail, record)
                    return
                split = split_for(conversation_key(pair.input["messages"]), self.validation_fraction)
                row = pair_feature_row(pair, tokens, shape=shape, source=shard.source, loc=loc, split=split,
                                       pii=sum(found.values()))
                files.keep(pair.to_record(), row, result.records_read)

            for item in read_preference_file(Path(shard.source), self.extract):
                if isinstance(item, Rejection):
                    result.records_read += 1
                    reject("extract", item.loc, item.reason, item.detail, item.record)
                    continue
                loc, record = item.loc, item.example
                shape = detect_shape(record)
                try:
                    if shape == "rated":
                        answer = rated_answer(record)
                        rated.setdefault(answer.conversation, []).append((loc, answer, record))
                        continue  # counted with its conversation below
                    result.records_read += 1
                    if shape is None:
                        raise PairRejected("unknown_preference_shape", "no chosen/rejected, preference or rating keys")
                    pair = to_pair(record, shape)
                except PairRejected as exc:
                    if shape == "rated":
                        result.records_read += 1
                    reject("extract" if exc.reason in ("unknown_preference_shape", "invalid_rating") else "quality",
                           loc, exc.reason, exc.detail, record)
                    continue
                keep(pair, shape, loc, record)
            for rows in rated.values():
                result.records_read += 1
                loc = rows[0][0] if len(rows) == 1 else f"{rows[0][0]} (+{len(rows) - 1} rated rows)"
                records = [record for _, _, record in rows]
                try:
                    pair = pair_from_ratings([answer for _, answer, _ in rows], self.min_rating_margin)
                except PairRejected as exc:
                    reject("quality", loc, exc.reason, exc.detail, records)
                    continue
                keep(pair, "rated", loc, records)
        return files.finish(pii)

    def tally(self, features: pd.DataFrame, over_limit: int) -> tuple[dict[str, int], int]:
        """Billed: sum over training pairs of (input + preferred) + (input + non-preferred).

        Epochs then follow OpenAI's default rule on the number of training pairs, as for
        supervised data (OpenAI documents no other rule for DPO)."""
        train = features[features["split"] == "train"]
        tokens = {
            "total": int(features["trained_tokens"].sum()),
            "train": int(train["trained_tokens"].sum()),
            "input": int(features["input_tokens"].sum()),
            "preferred": int(features["preferred_tokens"].sum()),
            "non_preferred": int(features["non_preferred_tokens"].sum()),
            "assistant": int(features["preferred_tokens"].sum() + features["non_preferred_tokens"].sum()),
            **sequence_figures(features["tokens"]),
            "over_limit": over_limit,
        }
        return tokens, int(train["trained_tokens"].sum())

    def gemini_features(self, split_paths: dict[str, str]) -> pd.DataFrame:
        import pandas as pd

        from ftflow.formats.gemini import pair_tokens

        rows = []
        for name, path in split_paths.items():
            with open(path, "rb") as f:
                for line in f:
                    inp, preferred, non_preferred = pair_tokens(loads_exact(line))
                    rows.append((name, inp + max(preferred, non_preferred), 2 * inp + preferred + non_preferred, inp,
                                 preferred, non_preferred))
        return pd.DataFrame(rows, columns=["split", "tokens", "trained_tokens", "input_tokens", "preferred_tokens",
                                           "non_preferred_tokens"])

    def figures(self, features_path: str) -> dict[str, dict[str, Any]]:
        """The `preference` suite's figures: pairs, near-identical share, length bias."""
        import pandas as pd

        return {"preference": figures_of(pd.read_parquet(features_path)).to_row()}
