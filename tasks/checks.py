"""Per-example checks: the rules OpenAI enforces on a chat fine-tuning file, and the cookbook's.

`check_example` runs on each normalised example of a shard (and on each sequence of a
preference pair). A failing example goes to `rejected.jsonl` with one reason from `REASONS`,
which names every reason a record can be rejected for at any stage (documented in
docs/rejections.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from typing import Any

import orjson
import tiktoken

from ftflow.encodings import PACKAGED_BPE, special_tokens
from ftflow.reading import JsonRejected, strict_loads
from tasks.budget import count_example_tokens

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


def _check_tool_calls(message: dict[str, Any], number: int, max_depth: int) -> None:
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
            strict_loads(function["arguments"], max_depth)
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


def _check_message(message: Any, number: int, max_depth: int) -> None:
    where = f"message {number}"
    _check_object(message, MESSAGE_KEYS, where)
    role = message.get("role")
    if role not in ROLES:
        raise ExampleRejected("unknown_role", f"{where}: role {role!r}")
    if "name" in message and not isinstance(message["name"], str):
        raise ExampleRejected("data_type", f"{where}: name must be a string")
    if "tool_calls" in message:
        _check_tool_calls(message, number, max_depth)
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


def check_example(example: Any, encoding: tiktoken.Encoding, limit: int, *, max_record_depth: int) -> tuple[int, int]:
    """Return (tokens, assistant tokens) of a valid example; raise ExampleRejected otherwise.

    `max_record_depth` (the run's setting) bounds the nesting in tool calls' `arguments`, as in the record.
    """
    _check_object(example, EXAMPLE_KEYS, "example")
    messages = example.get("messages")
    if not isinstance(messages, list):
        raise ExampleRejected("data_type" if messages is not None else "missing_messages", "messages must be a list")
    if not messages:
        raise ExampleRejected("missing_messages", "messages is empty")
    for number, message in enumerate(messages, 1):
        _check_message(message, number, max_record_depth)
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
