"""The provider's own token counting: chat format overhead plus every string encoded.

The same rule as OpenAI's cookbook ("Data preparation and analysis for chat model
fine-tuning"): 3 tokens per message, 1 more for a `name`, 3 to prime the reply, each string
encoded as the model sees it. Structured values (tools, tool calls) are encoded as JSON with
their characters as they are (`ensure_ascii=False`): the model reads "Größe", not
"Gr\\u00f6\\u00dfe". Numbers and booleans (`weight`) are not text the model reads.
`tests/unit/test_token_reconciliation.py` pins the cookbook's own figures and checks that the
pipeline's budget counts every example kind the same way.
"""

from __future__ import annotations

import json
from typing import Any

from ftflow.encodings import encoding_for_model

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
        return "".join(str(p.get("text", "")) for p in value)  # content as text parts: the model reads the text
    if value is None or isinstance(value, bool | int | float):
        return None
    return json.dumps(value, ensure_ascii=False)


def count_message_tokens(model: str, messages: list[dict[str, Any]], tools: list[Any] | None = None) -> int:
    encoding = encoding_for_model(model)
    total = REPLY_PRIMING_TOKENS
    for message in messages:
        total += TOKENS_PER_MESSAGE
        for key, value in message.items():
            text = _text(value)
            if text is not None:
                total += len(encoding.encode_ordinary(text)) + (TOKENS_PER_NAME if key == "name" else 0)
    if tools:
        total += len(encoding.encode_ordinary(json.dumps(tools, ensure_ascii=False)))
    return total


def count_example_tokens(model: str, example: dict[str, Any]) -> int:
    """Tokens of one chat training example: its messages, its `tools` and its `functions`."""
    total = count_message_tokens(model, example["messages"])
    for key in ("tools", "functions"):
        if example.get(key):
            total += count_text_tokens(model, json.dumps(example[key], ensure_ascii=False))
    return total


def count_text_tokens(model: str, text: str) -> int:
    return len(encoding_for_model(model).encode_ordinary(text))
