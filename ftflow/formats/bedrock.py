"""Bedrock's training formats, rendered from ftflow's chat examples; and Nova's per-example rules.

Pure and deterministic (same lines in, same bytes out), so the bytes uploaded have a stable
sha256. Sources (tests/data/bedrock/SOURCE.md):

- Nova (`amazon.nova-*`): `bedrock-conversation-2024`, `{"schemaVersion", "system": [{"text"}],
  "messages": [{"role": "user"|"assistant", "content": [{"text"}]}]}`; the first turn user, the
  last assistant; "User:", "Bot:", "Assistant:", "System:", `<image>`, `<video>`, `[EOS]`
  anywhere in the data fail the job
  (https://docs.aws.amazon.com/nova/latest/userguide/fine-tune-prepare-data-understanding.html).
- Llama and Titan text models: `{"prompt", "completion"}`
  (https://docs.aws.amazon.com/bedrock/latest/userguide/preparing-text-data.html). A multi-turn
  conversation becomes one prompt (system, then the turns before the last answer, one per line
  with their role) and the last assistant answer as the completion.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Literal

SCHEMA_VERSION = "bedrock-conversation-2024"
RESERVED = ("User:", "Bot:", "Assistant:", "System:", "<image>", "<video>", "[EOS]")
Format = Literal["conversation", "prompt_completion"]
# The reasons `nova_rules` gives (documented in docs/rejections.md).
NOVA_REASONS = frozenset({"nova_reserved_string", "nova_unsupported_role", "nova_first_turn_not_user",
                          "nova_last_turn_not_assistant"})


def format_for(model: str) -> Format:
    """Nova models take conversations; the other text models (Llama, Titan) prompt/completion."""
    return "conversation" if model.split("/")[-1].startswith("amazon.nova") else "prompt_completion"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [] if isinstance(part, dict))


def to_conversation(example: dict[str, Any]) -> dict[str, Any]:
    """One chat example as a `bedrock-conversation-2024` record (system messages to `system`)."""
    messages = example["messages"]
    system = [{"text": _text(m["content"])} for m in messages if m["role"] == "system"]
    turns = [{"role": m["role"], "content": [{"text": _text(m["content"])}]} for m in messages
             if m["role"] in ("user", "assistant")]
    return {"schemaVersion": SCHEMA_VERSION, **({"system": system} if system else {}), "messages": turns}


def to_prompt_completion(example: dict[str, Any]) -> dict[str, Any]:
    """One chat example as `{"prompt", "completion"}`: the last assistant answer is the completion."""
    messages = [m for m in example["messages"] if m["role"] in ("system", "user", "assistant")]
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    before = messages[:last]
    if len(before) == 1 and before[0]["role"] == "user":
        prompt = _text(before[0]["content"])
    else:
        prompt = "\n".join(f"{m['role']}: {_text(m['content'])}" for m in before)
    return {"prompt": prompt, "completion": _text(messages[last]["content"])}


def render(lines: Iterable[bytes], fmt: Format) -> bytes:
    """Chat JSONL lines in Bedrock's format, one record a line."""
    convert = to_conversation if fmt == "conversation" else to_prompt_completion
    out = [json.dumps(convert(json.loads(line)), ensure_ascii=False, separators=(",", ":"))
           for line in lines if line.strip()]
    return ("\n".join(out) + "\n").encode() if out else b""


def nova_rules(example: dict[str, Any]) -> tuple[str, str] | None:
    """Why Nova would fail a job on this chat example (reason, detail), or None. Pairs (DPO) have no
    Bedrock format: Bedrock has no DPO, and the provider refuses such a run before any upload."""
    messages = example.get("messages")
    if not isinstance(messages, list):
        return None
    for index, message in enumerate(messages):
        text = _text(message.get("content"))
        if found := next((r for r in RESERVED if r in text), None):
            return "nova_reserved_string", f"{found!r} in message {index} ({message.get('role')})"
    start = next((i for i, m in enumerate(messages) if m.get("role") != "system"), len(messages))
    turns = messages[start:]
    if other := next((m.get("role") for m in turns if m.get("role") not in ("user", "assistant")), None):
        return "nova_unsupported_role", f"a {other} message (Nova takes system, user and assistant text)"
    if not turns or turns[0].get("role") != "user":
        return "nova_first_turn_not_user", f"the first turn is {turns[0].get('role') if turns else 'missing'}"
    if turns[-1].get("role") != "assistant":
        return "nova_last_turn_not_assistant", f"the last turn is {turns[-1].get('role')}"
    return None
