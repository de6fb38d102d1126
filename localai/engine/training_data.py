"""Fine-tuning files as OpenAI checks them: chat examples and preference (DPO) pairs.

Files are read line by line from disk, never whole, so a 512 MB file is checked in constant
memory. A file's lines are all chat examples (`{"messages": [...]}`) or all preference pairs
(`{"input": {"messages": [...]}, "preferred_output": [...], "non_preferred_output": [...]}`);
upload accepts either, a job requires the one its method trains on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from localai.engine.tokens import count_example_tokens

MIN_EXAMPLES = 10
MAX_LINE_BYTES = 8 * 1024 * 1024  # far above any example within a 65,536-token context
ROLES = {"system", "user", "assistant", "tool"}
INPUT_ROLES = {"system", "developer", "user", "assistant", "tool"}
SPECIAL_TOKEN = re.compile(r"<\|(endoftext|fim_prefix|fim_middle|fim_suffix|endofprompt)\|>")
FORMATS = {"supervised": "chat", "dpo": "preference"}


class InvalidExample(ValueError):
    """A line that is not a valid example; the message is OpenAI's reason."""


def read_examples(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, parsed object) for every non-blank line; InvalidExample on bad JSON."""
    with open(path, "rb") as f:
        number = 0
        while raw := f.readline(MAX_LINE_BYTES + 1):
            number += 1
            if len(raw) > MAX_LINE_BYTES:  # never hold a giant line (or a file without newlines)
                raise InvalidExample(f"Invalid file format. Line {number} is longer than {MAX_LINE_BYTES} bytes.")
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                raise InvalidExample(f"Invalid file format. Line {number} is not valid JSON.") from None
            if not isinstance(record, dict):
                raise InvalidExample(f"Invalid file format. Line {number} is not a JSON object.")
            yield number, record


def format_of(record: dict[str, Any]) -> str:
    return "preference" if "input" in record or "preferred_output" in record else "chat"


def check_chat(record: dict[str, Any], number: int) -> None:
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidExample(f"Invalid file format. Example {number}: missing 'messages'.")
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise InvalidExample(f"Invalid file format. Example {number}: invalid role.")
    if not any(m["role"] == "assistant" for m in messages):
        raise InvalidExample(f"Invalid file format. Example {number}: no assistant message.")


def _single_assistant_turn(output: Any) -> bool:
    if not isinstance(output, list) or len(output) != 1 or not isinstance(output[0], dict):
        return False
    message = output[0]
    has_text = isinstance(message.get("content"), str) and message["content"].strip() != ""
    return message.get("role") == "assistant" and (has_text or bool(message.get("tool_calls")))


def check_preference(record: dict[str, Any], number: int) -> None:
    """The preference-input format of OpenAI's spec: an input conversation and two single replies."""
    example = f"Invalid file format. Example {number}:"
    source = record.get("input")
    if not isinstance(source, dict):
        raise InvalidExample(f"{example} 'input' must be an object with 'messages'.")
    messages = source.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidExample(f"{example} 'input.messages' must be a non-empty list.")
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in INPUT_ROLES:
            raise InvalidExample(f"{example} invalid role in 'input.messages'.")
    if messages[-1]["role"] != "user":
        raise InvalidExample(f"{example} 'input.messages' must end with a user message.")
    if "tools" in source and not isinstance(source["tools"], list):
        raise InvalidExample(f"{example} 'input.tools' must be a list.")
    for key in ("preferred_output", "non_preferred_output"):
        if key not in record:
            raise InvalidExample(f"{example} missing '{key}'.")
        if not _single_assistant_turn(record[key]):
            raise InvalidExample(f"{example} '{key}' must be a list of exactly one assistant message with content.")


CHECKS = {"chat": check_chat, "preference": check_preference}


def check_file(path: Path, *, method: str | None = None, min_examples: int = 0) -> tuple[int, str | None]:
    """Return (examples, None) for a valid file, or (examples so far, reason) otherwise.

    Without a method (at upload) the first example decides the format; with one, the file
    must be in that method's format.
    """
    expected = FORMATS.get(method or "")
    examples = 0
    try:
        for number, record in read_examples(path):
            found = format_of(record)
            expected = expected or found
            if found != expected:
                raise InvalidExample(
                    f"Invalid file format. Example {number} is in the {found} format, but "
                    + (f"method '{method}' trains on the {expected} format." if method else f"line 1 is {expected}.")
                )
            CHECKS[found](record, number)
            examples += 1
    except InvalidExample as error:
        return examples, str(error)
    if examples < min_examples:
        return examples, f"Training file has {examples} example(s), but must have at least {min_examples} examples."
    return examples, None


def sequences(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The chat sequences one example trains on: itself, or a pair's input with each output."""
    if format_of(record) == "chat":
        return [record]
    source = record["input"]
    tools = {"tools": source["tools"]} if source.get("tools") else {}
    outputs = (record["preferred_output"], record["non_preferred_output"])
    return [{"messages": [*source["messages"], *output], **tools} for output in outputs]


def training_tokens(path: Path, model: str, context: int) -> tuple[list[int], str | None]:
    """Tokens per example (each sequence capped at the context), or the first special-token line.

    A preference pair counts as two sequences, the input with each output: DPO scores both.
    """
    totals = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            if match := SPECIAL_TOKEN.search(line):
                return totals, f"Example {number} contains the special token {match.group(0)}."
            record = json.loads(line)
            totals.append(sum(min(context, count_example_tokens(model, s)) for s in sequences(record)))
    return totals, None
