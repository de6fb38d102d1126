"""The provider's own token counting: chat format overhead plus every string encoded."""

from __future__ import annotations

import json
from typing import Any

from ftflow.encodings import encoding_for_model


def count_message_tokens(model: str, messages: list[dict[str, Any]], tools: list[Any] | None = None) -> int:
    encoding = encoding_for_model(model)
    total = 3
    for message in messages:
        total += 3
        for key, value in message.items():
            if key == "weight" or value is None:
                continue
            text = value if isinstance(value, str) else json.dumps(value)
            total += len(encoding.encode_ordinary(text)) + (1 if key == "name" else 0)
    if tools:
        total += len(encoding.encode_ordinary(json.dumps(tools)))
    return total


def count_text_tokens(model: str, text: str) -> int:
    return len(encoding_for_model(model).encode_ordinary(text))
