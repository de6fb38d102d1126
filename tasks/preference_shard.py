"""Preference shards: the prepare pass for DPO pairs, shard by shard as for chat examples.

Each input file is one shard. Rated answers must be grouped per conversation before they
pair up (best against worst), and a conversation's rows may sit anywhere in the file: cutting
the file into byte ranges could split a conversation across two shards and pair it twice or
never. Preference files are small next to raw chat logs, so whole-file shards cost little.

Per record: raw JSON line / table row -> shape -> pair (prefix split, single-turn outputs,
input ends on a user turn) -> PII masking and system prompt -> pair checks (identical outputs,
the chat checks of each sequence: keys, roles, special tokens, token limit) -> token counts,
pair digest (de-duplication) and conversation digest (split). The reduce step
(tasks/reduce.py) de-duplicates pairs across shards and writes them in canonical order.

Counting, in pairs (docs/rejections.md): a `chosen`/`rejected` record or an OpenAI preference
line is one record; a rated row that cannot be read (no shape, bad rating) is one record; the
readable rated rows of one conversation together are one record, kept as one pair or rejected
once. So `records_read == train + validation + sum(rejected) + duplicates_removed` in pairs.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ftflow.caching import RUN_CACHE
from ftflow.catalog import load_catalog
from ftflow.encodings import get_encoding
from ftflow.errors import ConfigError, InputError
from ftflow.jsonl import file_sha256, loads_exact
from ftflow.settings import Settings, default
from tasks.budget import Budget, default_epochs
from tasks.checks import ExampleRejected
from tasks.extract import resolve_sources
from tasks.features import FEATURE_SCHEMA
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
from tasks.reduce import ReduceResult, dedup_and_split
from tasks.shards import (
    SHARD_FEATURE_SCHEMA,
    Plan,
    Shard,
    ShardFiles,
    ShardResult,
    ShardSettings,
    prepare_shard,
)
from tasks.transform import TransformOptions, apply_system_prompt, split_for

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
PAIR_SHARD_SCHEMA = pa.schema([*SHARD_FEATURE_SCHEMA, *PAIR_COLUMNS])
PREFERENCE_CODE = ("preference.py", "preference_shard.py")


@dataclass(frozen=True)
class PreferenceOptions:
    """Preference settings that do not change a shard's output: the `preference` suite's gates."""

    min_pairs: int = default("dpo_min_pairs")
    max_length_bias: float = default("dpo_max_length_bias")
    max_near_identical_share: float = default("dpo_max_near_identical_share")

    @classmethod
    def from_settings(cls, settings: Settings) -> PreferenceOptions:
        return cls(min_pairs=settings.dpo_min_pairs, max_length_bias=settings.dpo_max_length_bias,
                   max_near_identical_share=settings.dpo_max_near_identical_share)

    def suite_parameters(self) -> dict[str, Any]:
        return {"min_pairs": self.min_pairs, "max_length_bias": self.max_length_bias,
                "max_near_identical_share": self.max_near_identical_share}


@dataclass(frozen=True)
class PreferenceShardSettings(ShardSettings):
    min_rating_margin: float = default("dpo_min_rating_margin")

    @classmethod
    def for_preferences(cls, model: str, transform: TransformOptions, validation_fraction: float,
                        min_rating_margin: float, extract: ExtractOptions | None = None) -> PreferenceShardSettings:
        """Settings for a model that takes DPO (a price for it in the table), else a ConfigError."""
        info = load_catalog().get(model)
        if info.dpo_training is None:
            takes = ", ".join(sorted(m.name for m in load_catalog().models.values() if m.dpo_training is not None))
            raise ConfigError(f"model {model!r} does not take DPO fine-tuning; use one of: {takes}")
        base = cls.for_model(model, extract or ExtractOptions(), transform, validation_fraction)
        return replace(base, min_rating_margin=min_rating_margin)

    @classmethod
    def from_settings(cls, settings: Settings, extract: ExtractOptions | None = None) -> PreferenceShardSettings:
        return cls.for_preferences(settings.model, TransformOptions.from_settings(settings),
                                   settings.validation_fraction, settings.dpo_min_rating_margin,
                                   extract or ExtractOptions.from_settings(settings))

    def fingerprint(self) -> str:
        code = hashlib.sha256(super().fingerprint().encode())
        here = Path(__file__).resolve().parent
        for name in PREFERENCE_CODE:
            code.update((here / name).read_bytes())
        return code.hexdigest()


# --- reading ---------------------------------------------------------------------------------


def plan_preference_files(sources: list[str]) -> Plan:
    """One shard per file (see the module docstring for why)."""
    skipped: list[str] = []
    paths = resolve_sources(sources, skipped)
    if not paths:
        raise InputError("no sources: give preference files or globs")
    fingerprints = {str(p): file_sha256(p) for p in paths}
    return Plan([Shard(i, str(p), "file", fingerprint=fingerprints[str(p)]) for i, p in enumerate(paths)],
                fingerprints, skipped)


# --- one pair --------------------------------------------------------------------------------


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


def write_preference_shard(shard: Shard, settings: PreferenceShardSettings, directory: Path) -> ShardResult:
    """One file's records -> pairs (rated rows grouped per conversation), each output written once."""
    encoding = get_encoding(settings.encoding)
    result = ShardResult(shard.name, shard.index, str(directory))
    pii: Counter[str] = Counter()
    rated: dict[str, list[tuple[str, RatedAnswer, Any]]] = {}
    with ShardFiles(result, directory, PAIR_SHARD_SCHEMA) as files:
        def reject(stage: str, loc: str, reason: str, detail: str, record: Any) -> None:
            files.reject(stage, shard.source, loc, reason, detail, record)

        def keep(pair: PreferencePair, shape: str, loc: str, record: Any) -> None:
            pair, found = clean_pair(pair, settings.transform)
            pii.update(found)
            try:
                tokens = check_pair(pair, encoding, settings.training_context,
                                    max_record_depth=settings.extract.max_record_depth)
            except (PairRejected, ExampleRejected) as exc:
                reject("quality", loc, exc.reason, exc.detail, record)
                return
            split = split_for(conversation_key(pair.input["messages"]), settings.validation_fraction)
            row = pair_feature_row(pair, tokens, shape=shape, source=shard.source, loc=loc, split=split,
                                   pii=sum(found.values()))
            files.keep(pair.to_record(), row, result.records_read)

        for item in read_preference_file(Path(shard.source), settings.extract):
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
                pair = pair_from_ratings([answer for _, answer, _ in rows], settings.min_rating_margin)
            except PairRejected as exc:
                reject("quality", loc, exc.reason, exc.detail, records)
                continue
            keep(pair, "rated", loc, records)
    return files.finish(pii)


# --- dataset figures and budget ----------------------------------------------------------------


def figures_of(features: Any) -> PreferenceFigures:
    """Figures of the kept training pairs (a features frame after de-duplication)."""
    train = features[features["split"] == "train"]
    return PreferenceFigures(pairs=len(train), near_identical=int(train["near_identical"].sum()),
                             preferred_longer=int(train["preferred_longer"].sum()))


def estimate_preference(features: Any, *, model: str, encoding: str, over_limit: int, n_epochs: int | None,
                        max_cost_usd: float | None) -> Budget:
    """Billing tokens = sum over training pairs of (input + preferred) + (input + non-preferred), x epochs.

    Epochs follow OpenAI's default rule on the number of training pairs, as for supervised data
    (OpenAI documents no other rule for DPO); the price is the table's DPO training price.
    """
    catalog = load_catalog()
    info = catalog.get(model)
    if info.dpo_training is None:
        raise ConfigError(f"model {model!r} has no DPO training price in the price table")
    train = features[features["split"] == "train"]
    sequences = features["tokens"]
    epochs = n_epochs if n_epochs is not None else default_epochs(len(train))
    billed = int(train["trained_tokens"].sum()) * epochs
    cost = round(billed / 1_000_000 * info.dpo_training, 4)
    return Budget(
        model=info.name, encoding=encoding, training_context=info.training_context,
        tokens={
            "total": int(features["trained_tokens"].sum()),
            "train": int(train["trained_tokens"].sum()),
            "input": int(features["input_tokens"].sum()),
            "preferred": int(features["preferred_tokens"].sum()),
            "non_preferred": int(features["non_preferred_tokens"].sum()),
            "assistant": int(features["preferred_tokens"].sum() + features["non_preferred_tokens"].sum()),
            "max_example": int(sequences.max()) if len(sequences) else 0,
            "p50_example": int(sequences.quantile(0.5)) if len(sequences) else 0,
            "p95_example": int(sequences.quantile(0.95)) if len(sequences) else 0,
            "over_limit": over_limit,
        },
        n_epochs=epochs, n_epochs_source="user" if n_epochs is not None else "openai-default-rule",
        billing_tokens=billed, price_per_1m_training_usd=info.dpo_training, estimated_cost_usd=cost,
        max_cost_usd=max_cost_usd, within_budget=max_cost_usd is None or cost <= max_cost_usd,
        prices_as_of=catalog.as_of,
    )


# --- tasks -----------------------------------------------------------------------------------


@task(name="plan-preference-shards", cache_policy=NO_CACHE)
def plan_preference_input(sources: list[str]) -> Plan:
    """Return one shard per preference file and a fingerprint of each."""
    return plan_preference_files(sources)


@task(name="prepare-preference-shard", task_run_name="prepare-preference-shard-{shard.name}", cache_policy=NO_CACHE)
def prepare_preference_shard_task(shard: Shard, settings: PreferenceShardSettings, work_dir: str) -> ShardResult:
    """Return one file's pair counters; its pairs, rejections and features go to the work dir."""
    result = prepare_shard(shard, settings, Path(work_dir), write=write_preference_shard)
    get_run_logger().info(result.summary())
    return result


@task(name="dedup-and-split-pairs", cache_policy=RUN_CACHE)
def reduce_preference_shards(results: list[ShardResult], staged_dir: str, out_dir: str) -> ReduceResult:
    """Return the split counts of the de-duplicated pairs (split by conversation)."""
    return dedup_and_split(results, Path(staged_dir), Path(out_dir), schema=PAIR_FEATURE_SCHEMA)


@task(name="preference-figures", cache_policy=RUN_CACHE)
def preference_figures(features_path: str) -> dict[str, Any]:
    """Return the one-row figures the `preference` suite checks (pairs, near-identical share, length bias)."""
    import pandas as pd

    return figures_of(pd.read_parquet(features_path)).to_row()


def gemini_pair_features(split_paths: dict[str, str]) -> Any:
    """The token columns `estimate_preference` reads, of each pair, by Gemini's documented estimate."""
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


@task(name="estimate-preference-budget", cache_policy=RUN_CACHE)
def estimate_preference_budget(features_path: str, model: str, encoding: str, over_limit: int,
                               n_epochs: int | None, max_cost_usd: float | None,
                               split_paths: dict[str, str] | None = None) -> Budget:
    """Return the token and cost budget of the prepared training pairs (a Gemini model: by Gemini's
    documented estimate from the split files, as `estimate_budget` does)."""
    import pandas as pd

    if load_catalog().get(model).token_rule == "gemini" and split_paths:
        from ftflow.formats.gemini import TOKEN_RULE

        features, encoding = gemini_pair_features(split_paths), TOKEN_RULE
    else:
        features = pd.read_parquet(features_path)
    return estimate_preference(features, model=model, encoding=encoding,
                               over_limit=over_limit, n_epochs=n_epochs, max_cost_usd=max_cost_usd)
