"""Transform: normalise conversations into clean chat examples; de-duplicate and split.

Per example (`normalize_example`): map roles, strip each turn, merge consecutive turns of
the same role, drop trailing turns after the last assistant message, put in the system
prompt, and find or mask PII. Dataset identity (`example_digests`): the content digest that
finds duplicates and orders the output, and the split digest (the conversation without its
system prompt) that puts an example in train or validation whatever the input order.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from ftflow.jsonl import dumps_exact
from ftflow.settings import Settings, default
from tasks.pii import scan_message

DEFAULT_ROLE_MAP = {
    "system": "system",
    "user": "user",
    "human": "user",
    "customer": "user",
    "client": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "bot": "assistant",
    "ai": "assistant",
    "agent": "assistant",
    "model": "assistant",
    "tool": "tool",
}
MERGEABLE_KEYS = {"role", "content", "name", "weight"}


@dataclass(frozen=True)
class TransformOptions:
    """How examples are normalised: derived from Settings (`from_settings`), whose defaults these are."""

    role_map: dict[str, str] = field(default_factory=lambda: default("role_map"))
    system_prompt: str | None = default("system_prompt")
    system_prompt_mode: Literal["replace", "if-missing"] = default("system_prompt_mode")
    pii: Literal["off", "report", "mask"] = default("pii")
    pii_regions: tuple[str, ...] = default("pii_regions")

    @classmethod
    def from_settings(cls, settings: Settings) -> TransformOptions:
        return cls(role_map=dict(settings.role_map), system_prompt=settings.system_prompt,
                   system_prompt_mode=settings.system_prompt_mode, pii=settings.pii,
                   pii_regions=tuple(settings.pii_regions))


def parse_mapping(pairs: list[str] | None, *, option: str) -> dict[str, str]:
    """Parse `A=b,C=d` (or repeated `A=b`) into {"A": "b", ...}."""
    mapping: dict[str, str] = {}
    for pair in (p for chunk in pairs or [] for p in chunk.split(",") if p.strip()):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{option}: expected KEY=value, got {pair!r}")
        mapping[key.strip()] = value.strip()
    return mapping


# --- per example ----------------------------------------------------------------------------


def map_role(role: Any, role_map: dict[str, str]) -> Any:
    """Map a source role, case-insensitively; unknown roles pass through for quality to reject."""
    return _role_lookup(role, _lowercase_keys(tuple(role_map.items())))


@lru_cache(maxsize=16)
def _lowercase_keys(pairs: tuple[tuple[str, str], ...]) -> dict[str, str]:
    # The user's map, lower-cased once per map rather than once per message.
    return {k.lower(): v for k, v in pairs}


def _role_lookup(role: Any, user_map: dict[str, str]) -> Any:
    if not isinstance(role, str):
        return role
    key = role.strip().lower()
    return user_map.get(key) or DEFAULT_ROLE_MAP.get(key, role)


def _mergeable(a: Any, b: Any) -> bool:
    return (
        isinstance(a, dict)
        and isinstance(b, dict)
        and a.get("role") == b.get("role")
        and set(a) <= MERGEABLE_KEYS
        and set(b) <= MERGEABLE_KEYS
        and isinstance(a.get("content"), str)
        and isinstance(b.get("content"), str)
        and a.get("name") == b.get("name")
        and a.get("weight") == b.get("weight")
    )


@dataclass
class NormalizeStats:
    trimmed_turns: int = 0
    merged_turns: int = 0
    pii: Counter[str] = field(default_factory=Counter)


def normalize_example(example: dict[str, Any], options: TransformOptions) -> tuple[dict[str, Any], NormalizeStats]:
    """Return the cleaned example and what was changed. Malformed parts are left for quality."""
    stats = NormalizeStats()
    messages = example.get("messages")
    if not isinstance(messages, list):
        return example, stats
    user_map = _lowercase_keys(tuple(options.role_map.items()))
    scan = options.pii != "off"
    mapped: list[Any] = []
    last_assistant = None
    for message in messages:
        if isinstance(message, dict):
            message = {**message, "role": _role_lookup(message.get("role"), user_map)}
            content = message.get("content")
            if isinstance(content, str):
                message["content"] = content.strip()
            if scan:
                message, _ = scan_message(message, options.pii, options.pii_regions, stats.pii)
            if message["role"] == "assistant":
                last_assistant = len(mapped)
        mapped.append(message)
    if last_assistant is not None:  # without one, quality rejects the example as a whole
        stats.trimmed_turns = len(mapped) - last_assistant - 1
        mapped = mapped[: last_assistant + 1]
    cleaned: list[Any] = []
    for message in mapped:
        if cleaned and _mergeable(cleaned[-1], message):
            cleaned[-1] = {**cleaned[-1], "content": cleaned[-1]["content"] + "\n" + message["content"]}
            stats.merged_turns += 1
        else:
            cleaned.append(message)
    if options.system_prompt is not None:
        cleaned = apply_system_prompt(cleaned, options.system_prompt, options.system_prompt_mode)
    return {**example, "messages": cleaned}, stats


def apply_system_prompt(messages: list[Any], prompt: str, mode: str) -> list[Any]:
    has_system = any(isinstance(m, dict) and m.get("role") == "system" for m in messages)
    if has_system and mode == "if-missing":
        return messages
    rest = [m for m in messages if not (isinstance(m, dict) and m.get("role") == "system")]
    return [{"role": "system", "content": prompt}, *rest]


# --- dataset identity -----------------------------------------------------------------------


def collapsed_text(text: str) -> str:
    """Case-folded text with each run of whitespace made one space, no space at either end: how
    the digests (`example_digests`) see a string."""
    # Most text has nothing to collapse: printable text holds no whitespace but the ASCII space,
    # so without two spaces in a row or one at an end, splitting and joining changes nothing.
    if text.isprintable() and "  " not in text and text[:1] != " " and text[-1:] != " ":
        return text.casefold()
    return " ".join(text.split()).casefold()


def _canonical(value: Any) -> Any:
    """Case-folded, whitespace-collapsed text; `weight` left out (it does not change the content)."""
    if isinstance(value, str):
        return collapsed_text(value)
    if isinstance(value, dict):
        # Strings inline: a message is a dict of mostly strings, and this runs for every example.
        return {k: collapsed_text(v) if type(v) is str else _canonical(v) for k, v in value.items() if k != "weight"}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def _sha256_of(messages: Any, tools: Any) -> str:
    return hashlib.sha256(dumps_exact({"messages": messages, "tools": tools}, sort_keys=True)).hexdigest()


def content_hash(example: dict[str, Any]) -> str:
    """sha256 of the normalised content: roles, case-folded whitespace-collapsed text, tools."""
    return _sha256_of(_canonical(example.get("messages")), _canonical(example.get("tools")))


def example_digests(example: dict[str, Any]) -> tuple[str, str]:
    """Return (content digest, split digest) of a normalised example.

    The content digest identifies the example (duplicates, canonical order); the split digest
    leaves the system prompt out, so changing the prompt never moves an example between splits.
    """
    messages = _canonical(example.get("messages"))
    tools = _canonical(example.get("tools"))
    conversation = [m for m in messages if not (isinstance(m, dict) and m.get("role") == "system")]
    return _sha256_of(messages, tools), _sha256_of(conversation, tools)


def split_for(digest: str, validation_fraction: float) -> Literal["train", "validation"]:
    """Deterministic split: the first 32 bits of the conversation's split digest against the fraction."""
    return "validation" if int(digest[:8], 16) / 2**32 < validation_fraction else "train"
