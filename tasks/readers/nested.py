"""Nested records: a conversation as a list of turns, each turn a dict with a role and a text.

ShareGPT (`conversations`, `from`/`value`), and `turns` / `utterances` / `dialog` / `dialogue`
lists; the keys are found among the usual names unless `--turns-key`, `--role-key` or
`--content-key` name them. The JSON readers (tasks/readers/jsonl.py) hand such records here.
"""

from __future__ import annotations

from typing import Any

from tasks.readers import ExtractOptions, RecordRejected

TURNS_KEYS = ("conversations", "turns", "utterances", "dialog", "dialogue")
ROLE_KEYS = ("role", "from", "speaker", "author", "sender")
CONTENT_KEYS = ("content", "value", "text", "utterance", "message")


def first_key(obj: dict[str, Any], explicit: str | None, defaults: tuple[str, ...]) -> str | None:
    """The key the options name, if obj has it; without one, the first of defaults obj has."""
    if explicit is not None:
        return explicit if explicit in obj else None
    return next((k for k in defaults if k in obj), None)


def nested_to_example(record: dict[str, Any], options: ExtractOptions) -> dict[str, Any]:
    """Turn a nested conversation (ShareGPT, turns/utterances/dialog) into `messages`."""
    turns_key = first_key(record, options.turns_key, TURNS_KEYS)
    turns = record.get(turns_key) if turns_key else None
    if not isinstance(turns, list) or not turns:
        raise RecordRejected("missing_messages", "no non-empty list of turns")
    messages: list[dict[str, Any]] = []
    if isinstance(record.get("system"), str):  # ShareGPT keeps the system prompt beside
        messages.append({"role": "system", "content": record["system"]})
    for number, turn in enumerate(turns, 1):
        if not isinstance(turn, dict):
            raise RecordRejected("data_type", f"turn {number} is {type(turn).__name__}, not an object")
        role_key = first_key(turn, options.role_key, ROLE_KEYS)
        content_key = first_key(turn, options.content_key, CONTENT_KEYS)
        messages.append(
            {
                "role": turn.get(role_key) if role_key else None,
                "content": turn.get(content_key) if content_key else None,
            }
        )
    return {"messages": messages}
