"""Gemini's tuning formats on Vertex AI, from ftflow's OpenAI chat JSONL; and Gemini's per-example rules.

Supervised (docs.cloud.google.com/gemini-enterprise-agent-platform/models/tuning/supervised-tuning/prepare-data):
`{"systemInstruction": {"parts": [{"text"}]}, "contents": [{"role": "user"|"model", "parts": [{"text"}]}]}`:
`assistant` becomes `model`, the system message moves to `systemInstruction`, content to `parts[].text`.

Preference (docs.cloud.google.com/vertex-ai/generative-ai/docs/models/gemini-preference-tuning-prepare):
`{"system_instruction", "contents" (ending on a user turn), "completions": [{"score": 1, "completion":
{"role": "model", "parts"}}, {"score": 0, ...}]}`, from OpenAI's `input` / `preferred_output` /
`non_preferred_output`.

Tokens: Gemini's tokenizer is not available offline. Google documents "a token is equivalent to
about 4 characters" (ai.google.dev/gemini-api/docs/tokens); `example_tokens` applies that rule
and says it is an estimate; the job reports the real count (`tuningDataStats`).
"""

from __future__ import annotations

import math
from typing import Any

from ftflow.jsonl import dumps_exact, loads_exact

MAX_EXAMPLE_TOKENS = 131_072  # input + output tokens per example, SFT and preference (Vertex's limits pages)
MAX_VALIDATION_EXAMPLES = 5_000
MAX_FILE_BYTES = 1 << 30  # 1 GB per JSONL file
CHARS_PER_TOKEN = 4
TOKEN_RULE = "estimate: 4 characters per token (Gemini's documented rule; no offline tokenizer)"
ROLES = {"user": "user", "assistant": "model"}


def text_of(content: Any) -> str:
    """A message's text: a string, or the text of its text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _instruction(messages: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    if messages and messages[0].get("role") == "system":
        return {"parts": [{"text": text_of(messages[0].get("content"))}]}, messages[1:]
    return None, messages


def _contents(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"role": ROLES[m["role"]], "parts": [{"text": text_of(m.get("content"))}]} for m in messages]


def to_gemini_sft(example: dict[str, Any]) -> dict[str, Any]:
    """One OpenAI chat example (that passed `gemini_rules`) as a Gemini supervised tuning example."""
    instruction, messages = _instruction(example["messages"])
    return {**({"systemInstruction": instruction} if instruction else {}), "contents": _contents(messages)}


def to_gemini_preference(pair: dict[str, Any]) -> dict[str, Any]:
    """One OpenAI preference pair (that passed `gemini_rules`) as a Gemini preference tuning example."""
    instruction, messages = _instruction(pair["input"]["messages"])
    completions = [{"score": score, "completion": _contents(pair[key])[0]}
                   for score, key in ((1, "preferred_output"), (0, "non_preferred_output"))]
    return {**({"system_instruction": instruction} if instruction else {}), "contents": _contents(messages),
            "completions": completions}


def render_jsonl(data: bytes) -> bytes:
    """A train/validation file of ftflow's (chat examples or preference pairs) in Gemini's format."""
    out = bytearray()
    for line in data.splitlines():
        if not line.strip():
            continue
        record = loads_exact(line)
        out += dumps_exact(to_gemini_preference(record) if "input" in record else to_gemini_sft(record)) + b"\n"
    return bytes(out)


def example_tokens(record: dict[str, Any]) -> int:
    """Estimated Gemini tokens of one chat example or pair (a pair: its input and its longer output)."""
    def chars(messages: list[dict[str, Any]]) -> int:
        return sum(len(text_of(m.get("content"))) for m in messages)

    if "input" in record:
        total = chars(record["input"].get("messages", [])) + max(
            chars(record.get(key, [])) for key in ("preferred_output", "non_preferred_output"))
    else:
        total = chars(record.get("messages", []))
    return math.ceil(total / CHARS_PER_TOKEN)


def pair_tokens(pair: dict[str, Any]) -> tuple[int, int, int]:
    """Estimated Gemini tokens of a preference pair's input, preferred and non-preferred output."""
    def tokens(messages: list[dict[str, Any]]) -> int:
        return math.ceil(sum(len(text_of(m.get("content"))) for m in messages) / CHARS_PER_TOKEN)

    return (tokens(pair["input"].get("messages", [])), tokens(pair.get("preferred_output", [])),
            tokens(pair.get("non_preferred_output", [])))


def assistant_tokens(record: dict[str, Any]) -> int:
    """Estimated Gemini tokens of what the model learns to say: model turns (a pair: its longer output)."""
    if "input" in record:
        return max(math.ceil(sum(len(text_of(m.get("content"))) for m in record.get(key, [])) / CHARS_PER_TOKEN)
                   for key in ("preferred_output", "non_preferred_output"))
    return math.ceil(sum(len(text_of(m.get("content"))) for m in record.get("messages", [])
                         if m.get("role") == "assistant") / CHARS_PER_TOKEN)


# The reasons `gemini_rules` gives (documented in docs/rejections.md).
GEMINI_REASONS = frozenset({"gemini_tool_calls", "gemini_system_not_first", "gemini_message_weight", "gemini_too_long"})


def gemini_rules(record: dict[str, Any]) -> tuple[str, str] | None:
    """Why Vertex would refuse this chat example or preference pair for Gemini tuning, or None."""
    messages = list(record["input"]["messages"]) if "input" in record else list(record.get("messages", []))
    outputs = [m for key in ("preferred_output", "non_preferred_output") for m in record.get(key, [])]
    if record.get("tools") or record.get("input", {}).get("tools") or any(
            m.get("role") == "tool" or m.get("tool_calls") for m in messages + outputs):
        return "gemini_tool_calls", "tools and tool calls are not converted to Gemini's functionCall parts"
    for index, message in enumerate(messages):
        if message.get("role") == "system" and index > 0:
            return "gemini_system_not_first", f"message {index + 1} is a system message; Gemini takes one " \
                                              "systemInstruction, before the conversation"
        if message.get("weight") == 0:
            return "gemini_message_weight", f"message {index + 1} has weight 0; Gemini's format has no " \
                                            "per-message weight"
    tokens = example_tokens(record)
    if tokens > MAX_EXAMPLE_TOKENS:
        return "gemini_too_long", f"about {tokens} tokens ({TOKEN_RULE}), over Gemini's {MAX_EXAMPLE_TOKENS} " \
                                  "per example"
    return None
