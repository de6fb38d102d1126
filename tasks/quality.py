"""Quality: per-example rules (OpenAI's file checks, the cookbook's), then dataset suites (GX).

Layer 1, `check_example`: the rules OpenAI enforces on a chat fine-tuning file and the
cookbook's format checks. A failing example goes to `rejected.jsonl` with one reason from
`REASONS` (also documented in docs/rejections.md).

Layer 2, `run_suites`: Great Expectations 1.x suites kept as JSON in `expectations/`, run on
frames of numbers, never raw text: `examples.json` on one row per kept example,
`dataset.json` on one row of dataset totals, `drift.json` on one row of how far this run's
feature summary moved from the last successful run's. Thresholds are suite parameters filled
from settings (`$PARAMETER`), so the JSON files hold no model-specific numbers. Every
expectation there can fail on the pipeline's own output (tests/integration/test_suites_flow.py shows each).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import tiktoken
from prefect import task
from prefect.artifacts import create_markdown_artifact

from ftflow.caching import RUN_CACHE
from ftflow.encodings import PACKAGED_BPE, special_tokens
from ftflow.outputs import writing
from ftflow.reading import JsonRejected, strict_loads
from ftflow.resources import resource_text
from ftflow.settings import Settings, default
from tasks.budget import count_example_tokens

if TYPE_CHECKING:
    import pandas as pd

# Every reason a record can be rejected for, at any stage. Stable names: reports key on them.
REASONS = {
    "invalid_utf8": "the line is not valid UTF-8",
    "invalid_json": "the line is not valid JSON",
    "duplicate_key": "a JSON object with the same key twice",
    "too_deep": "arrays and objects nested deeper than max_record_depth",
    "truncated_file": "a compressed file cut short: the rest after the last complete record",
    "corrupt_file": "data that cannot be decompressed or decoded: the rest of the file",
    "read_error": "the operating system failed to read the file: the rest of it",
    "decompressed_too_large": "a compressed file giving out more than max_decompressed_bytes: the rest of it",
    "ragged_row": "a CSV row with more or fewer fields than the header",
    "malformed_row": "a CSV row that is not valid CSV (e.g. a stray or unclosed quote)",
    "missing_turn_order": "a table row without a turn-order value",
    "data_type": "a record, message or field has the wrong JSON type",
    "missing_messages": "no `messages` list (or list of turns, or transcript) or it is empty",
    "unparseable_transcript": "no speaker prefix at a line start, or text before the first",
    "missing_conversation_id": "a table row without a conversation id",
    "conversation_not_contiguous": "table rows of one conversation are not together",
    "unknown_key": "a key OpenAI does not accept, on the example or a message",
    "unknown_role": "a role other than system, user, assistant, tool (after role mapping)",
    "missing_content": "a message without content (assistant tool-call turns aside)",
    "non_string_content": "content that is neither a string nor a list of text parts",
    "empty_content": "content that is empty after stripping whitespace",
    "no_assistant_message": "no assistant message to learn from",
    "malformed_tool_calls": "tool_calls or a tool message that does not follow OpenAI's shape",
    "unknown_tool_call_id": "a tool message whose tool_call_id answers no earlier assistant tool call",
    "malformed_tools": "`tools` or `parallel_tool_calls` that does not follow OpenAI's shape",
    "invalid_weight": "`weight` not 0 or 1, or on a non-assistant message",
    "too_long": "more tokens than the model's training context",
    "special_token": "text the tokenizer treats as a special token, e.g. <|endoftext|>",
}
EXAMPLE_KEYS = {"messages", "tools", "parallel_tool_calls", "functions"}
MESSAGE_KEYS = {"role", "content", "name", "tool_calls", "tool_call_id", "weight", "function_call"}
ROLES = {"system", "user", "assistant", "tool"}
TEXT_PART_KEYS = {"type", "text"}


class ExampleRejected(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        assert reason in REASONS, reason
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@cache
def special_token_pattern() -> re.Pattern[str]:
    """Special tokens of every packaged encoding: OpenAI rejects them whatever the model."""
    tokens = sorted({t for name in PACKAGED_BPE for t in special_tokens(name)})
    assert all(t.startswith("<|") for t in tokens), "_special_token's prefilter looks for '<|'"
    return re.compile("|".join(re.escape(t) for t in tokens))


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _special_token(example: dict[str, Any]) -> str | None:
    """The first special token in any string of the example, or None."""
    try:
        # Every special token starts with "<|", which JSON never escapes: one C-speed look
        # at the serialised example clears nearly every example without a walk.
        if b"<|" not in orjson.dumps(example):
            return None
    except TypeError:  # a value JSON cannot hold (quality rejects it elsewhere): walk it
        pass
    pattern = special_token_pattern()
    for text in _strings(example):
        if "<|" in text and (match := pattern.search(text)):
            return match.group(0)
    return None


def _check_tool_calls(message: dict[str, Any], number: int) -> None:
    calls = message["tool_calls"]
    where = f"message {number}"
    if message.get("role") != "assistant":
        raise ExampleRejected("malformed_tool_calls", f"{where}: tool_calls on a non-assistant turn")
    if not isinstance(calls, list) or not calls:
        raise ExampleRejected("malformed_tool_calls", f"{where}: tool_calls must be a non-empty list")
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not (
            isinstance(call, dict)
            and isinstance(call.get("id"), str)
            and call.get("type", "function") == "function"
            and isinstance(function, dict)
            and isinstance(function.get("name"), str)
            and isinstance(function.get("arguments"), str)
        ):
            raise ExampleRejected(
                "malformed_tool_calls", f"{where}: each call needs id, function.name, function.arguments"
            )
        try:
            strict_loads(function["arguments"], default("max_record_depth"))
        except JsonRejected as exc:
            raise ExampleRejected(exc.reason, f"{where}: arguments: {exc.detail}") from None


def _check_tools(example: dict[str, Any]) -> None:
    tools = example.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise ExampleRejected("malformed_tools", "tools must be a list")
        for tool in tools:
            function = tool.get("function") if isinstance(tool, dict) else None
            if not (
                isinstance(tool, dict)
                and tool.get("type") == "function"
                and isinstance(function, dict)
                and isinstance(function.get("name"), str)
                and isinstance(function.get("parameters", {}), dict)
            ):
                raise ExampleRejected("malformed_tools", "each tool needs type function and function.name")
    if "parallel_tool_calls" in example and not isinstance(example["parallel_tool_calls"], bool):
        raise ExampleRejected("malformed_tools", "parallel_tool_calls must be true or false")


def _check_object(value: Any, allowed: set[str], where: str) -> None:
    """An object with only the keys OpenAI accepts there."""
    if not isinstance(value, dict):
        raise ExampleRejected("data_type", f"{where} is {type(value).__name__}, not an object")
    if not allowed.issuperset(value):
        raise ExampleRejected("unknown_key", f"{where}: unknown key(s) {sorted(set(value) - allowed)}")


def _text_parts(content: list[Any], where: str) -> str:
    """The text of content given as a list of parts; only text parts are accepted."""
    texts = []
    for part in content:
        if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
            raise ExampleRejected("non_string_content", f"{where}: content parts must be {{type: text, text: str}}")
        unknown = sorted(set(part) - TEXT_PART_KEYS)
        if unknown:
            raise ExampleRejected("unknown_key", f"{where}: unknown key(s) {unknown} in a content part")
        texts.append(part["text"])
    return "".join(texts)


def _check_message(message: Any, number: int) -> None:
    where = f"message {number}"
    _check_object(message, MESSAGE_KEYS, where)
    role = message.get("role")
    if role not in ROLES:
        raise ExampleRejected("unknown_role", f"{where}: role {role!r}")
    if "name" in message and not isinstance(message["name"], str):
        raise ExampleRejected("data_type", f"{where}: name must be a string")
    if "tool_calls" in message:
        _check_tool_calls(message, number)
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise ExampleRejected("malformed_tool_calls", f"{where}: a tool message needs tool_call_id")
    calls_tool = bool(message.get("tool_calls") or message.get("function_call"))
    content = message.get("content")
    if isinstance(content, list):  # OpenAI also takes content as a list of text parts
        content = _text_parts(content, where)
    if content is None:
        if not calls_tool:
            raise ExampleRejected("missing_content", f"{where} ({role}) has no content")
    elif not isinstance(content, str):
        raise ExampleRejected("non_string_content", f"{where}: content is {type(content).__name__}")
    elif not content.strip() and not calls_tool:
        raise ExampleRejected("empty_content", f"{where} ({role}) is empty")
    if "weight" in message:
        weight = message["weight"]
        if role != "assistant" or isinstance(weight, bool) or weight not in (0, 1):
            raise ExampleRejected("invalid_weight", f"{where}: weight {weight!r} on a {role} turn")


def _check_tool_call_ids(messages: list[dict[str, Any]]) -> None:
    """Each tool message answers a call made by an earlier assistant message."""
    called: set[str] = set()
    for number, message in enumerate(messages, 1):
        for call in message.get("tool_calls") or []:
            called.add(call["id"])
        if message["role"] == "tool" and message["tool_call_id"] not in called:
            raise ExampleRejected(
                "unknown_tool_call_id",
                f"message {number}: tool_call_id {message['tool_call_id']!r} answers no earlier tool call",
            )


def check_example(example: Any, encoding: tiktoken.Encoding, limit: int) -> tuple[int, int]:
    """Return (tokens, assistant tokens) of a valid example; raise ExampleRejected otherwise."""
    _check_object(example, EXAMPLE_KEYS, "example")
    messages = example.get("messages")
    if not isinstance(messages, list):
        raise ExampleRejected("data_type" if messages is not None else "missing_messages", "messages must be a list")
    if not messages:
        raise ExampleRejected("missing_messages", "messages is empty")
    for number, message in enumerate(messages, 1):
        _check_message(message, number)
    _check_tool_call_ids(messages)
    _check_tools(example)
    if not any(m["role"] == "assistant" for m in messages):
        raise ExampleRejected("no_assistant_message", "no assistant message")
    if special := _special_token(example):
        raise ExampleRejected("special_token", f"contains the special token {special}")
    tokens, assistant = count_example_tokens(example, encoding)
    if tokens > limit:
        raise ExampleRejected("too_long", f"{tokens} tokens, over the training context of {limit}")
    return tokens, assistant


# --- features --------------------------------------------------------------------------------

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
            self._writer.write_table(pa.Table.from_pylist(self._rows, schema=self.schema))
            self._rows = []

    def __enter__(self) -> FeatureWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._flush()
        self._writer.close()


# --- dataset suites (Great Expectations) -----------------------------------------------------

SUITES = ("examples", "dataset", "drift")


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


def load_suite(name: str) -> Any:
    import great_expectations as gx

    return gx.ExpectationSuite(**json.loads(resource_text(f"expectations/{name}.json")))


@dataclass
class QualityResult:
    success: bool
    failed: list[str]
    suites: dict[str, Any]
    features: dict[str, Any]
    drift: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"success": self.success, "failed": self.failed, "features": self.features, "drift": self.drift}


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _bounds(kwargs: dict[str, Any]) -> str:
    bounds = [f"{op} {_number(kwargs[key])}" for key, op in (("min_value", ">="), ("max_value", "<=")) if
              kwargs.get(key) is not None]
    if "value_set" in kwargs:
        bounds.append(f"in {kwargs['value_set']}")
    text = " and ".join(bounds)
    return f"{text} in at least {kwargs['mostly']:.0%} of rows" if kwargs.get("mostly", 1) < 1 else text


def _observed(result: dict[str, Any]) -> str:
    if "unexpected_count" in result:  # a per-row expectation: how many rows broke it
        return (f"{result['unexpected_count']} of {result['element_count']} rows "
                f"({result.get('unexpected_percent') or 0:.1f}%) outside")
    return _number(result.get("observed_value"))


def _describe(suite_name: str, result: Any) -> tuple[list[str], dict[str, Any]]:
    """Each expectation is named `<suite>.<column>`; a failure says what was seen and what was expected."""
    failed = []
    rows = []
    for r in result.results:
        config = r.expectation_config
        kwargs = {k: v for k, v in config.kwargs.items() if k != "batch_id"}
        name = f"{suite_name}.{kwargs.get('column', 'table')}"
        observed = _observed(r.result)
        rows.append(
            {
                "name": name,
                "expectation": config.type,
                "kwargs": kwargs,
                "success": bool(r.success),
                "observed": observed,
                "notes": config.meta.get("notes"),
            }
        )
        if not r.success:
            failed.append(f"{name}: {observed}, expected {_bounds(kwargs)}")
    return failed, {"success": bool(result.success), "statistics": result.statistics, "results": rows}


# GX's suite-parameter parser (pyparsing parse actions, arity probed on first use) is not
# thread-safe: two flow runs in threads of one process failed with "push_first() missing 1
# required positional argument". Validations are short; one at a time per process.
_GX_LOCK = threading.Lock()


def _quiet_gx() -> None:
    """No 'Created temporary directory' notices: GX sets some of its module loggers to INFO on import."""
    import logging

    for name in [n for n in logging.root.manager.loggerDict if n.startswith("great_expectations.")]:
        logging.getLogger(name).setLevel(logging.WARNING)


def run_suites(features: pd.DataFrame, totals: dict[str, Any], parameters: dict[str, Any],
               drift: DriftOptions = DriftOptions(), figures: dict[str, dict[str, Any]] | None = None) -> QualityResult:
    """Validate example features, dataset totals and their drift against the suites in expectations/.

    `figures` adds suites run on one row each (suite name -> row), e.g. `preference`.
    """
    import great_expectations as gx
    import pandas as pd
    from great_expectations.data_context.types.base import ProgressBarsConfig

    _quiet_gx()
    summary = feature_summary(features, totals)
    frames = {"examples": features, "dataset": pd.DataFrame([totals]),
              **{name: pd.DataFrame([row]) for name, row in (figures or {}).items()}}
    drift_info: dict[str, Any] = {"checked": drift.previous is not None, "previous": drift.previous}
    if drift.previous is not None:
        drift_info["changes"] = drift_changes(summary, drift.previous)
        frames["drift"] = pd.DataFrame([drift_info["changes"]])
    failed: list[str] = []
    suites: dict[str, Any] = {}
    with _GX_LOCK:
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)  # no tqdm bars in the run's output
        source = context.data_sources.add_pandas("ftflow")
        for name, frame in frames.items():
            batch_definition = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
            result = batch_definition.get_batch(batch_parameters={"dataframe": frame}).validate(
                load_suite(name), result_format="SUMMARY", expectation_parameters={**parameters, **drift.parameters()}
            )
            suite_failed, suites[name] = _describe(name, result)
            failed += suite_failed
    return QualityResult(success=not failed, failed=failed, suites=suites, features=summary, drift=drift_info)


def quality_markdown(result: QualityResult) -> str:
    lines = [f"# Data quality: {'passed' if result.success else 'FAILED'}", ""]
    for name, suite in result.suites.items():
        lines += [f"## Suite `{name}`", "", "| check | expected | observed | ok |", "|---|---|---|---|"]
        for row in suite["results"]:
            lines.append(
                f"| `{row['name']}` | {_bounds(row['kwargs'])} | {row['observed']} | "
                f"{'yes' if row['success'] else '**no**'} |"
            )
        lines.append("")
    if not result.drift["checked"]:
        lines.append("Drift not checked: no earlier successful run to compare with.")
    return "\n".join(lines)


@task(name="last-success-features", cache_policy=RUN_CACHE)
def last_success_features(settings: Settings) -> dict[str, Any] | None:
    """Return the feature summary of the last successful run of this base model (drift baseline), if any."""
    from tasks.registry import Registry

    last = Registry(settings.registry_url).last_successful_run(settings.model)
    return ((last or {}).get("prepare") or {}).get("quality", {}).get("features")


def run_suites_on_file(features_path: str, totals: dict[str, Any], parameters: dict[str, Any],
                       drift: DriftOptions, figures: dict[str, dict[str, Any]] | None) -> QualityResult:
    """`run_suites` on a features file (what the suites' process is sent: a path, not a frame)."""
    import pandas as pd

    # Where each example came from and its digest are text no suite checks: without them the
    # frame of a million examples is a few tens of MiB of numbers.
    columns = [name for name in FEATURE_SCHEMA.names if name not in ("source", "loc", "content_sha256")]
    return run_suites(pd.read_parquet(features_path, columns=columns), totals, parameters, drift, figures)


@task(name="check-quality", cache_policy=RUN_CACHE)
def check_quality(
    features_path: str,
    totals: dict[str, Any],
    parameters: dict[str, Any],
    out_dir: Path,
    drift: DriftOptions = DriftOptions(),
    figures: dict[str, dict[str, Any]] | None = None,
) -> QualityResult:
    """Return the GX suites' verdict; writes `quality.json` and a markdown artifact."""
    from ftflow import suites_process

    result = suites_process.run(run_suites_on_file, features_path, totals, parameters, drift, figures)
    with writing(out_dir, ("quality.json",)):
        (out_dir / "quality.json").write_bytes(
            orjson.dumps(
                {**result.to_dict(), "parameters": {**parameters, **drift.parameters()}, "suites": result.suites},
                option=orjson.OPT_INDENT_2,
                default=str,
            )
        )
    create_markdown_artifact(
        quality_markdown(result),
        key="ftflow-data-quality",
        description="Great Expectations suites on the prepared dataset",
    )
    return result
