"""Chat completions, simulated honestly and deterministically.

- A base model does not know the training data: it answers generically, in English, plain
  text, whatever the prompt asks for.
- A fine-tuned model answers with the final assistant reply of the training conversation
  most similar to the request (TF-IDF cosine over the user turns). So what it says is
  exactly what it was trained on: a useful dataset changes its answers, a broken one does not.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from localai.common import new_id, now
from localai.exceptions import InvalidRequest, NotFound
from localai.models import ModelsBackend
from localai.store import Store
from localai.tokens import count_message_tokens, count_text_tokens

WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def user_text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(m["content"] for m in messages if m.get("role") == "user" and isinstance(m.get("content"), str))


@dataclass
class TrainedIndex:
    """TF-IDF vectors of the training prompts, and the reply each one taught."""

    vectors: list[dict[str, float]]
    replies: list[str]
    idf: dict[str, float]

    @classmethod
    def build(cls, examples: list[dict[str, Any]]) -> TrainedIndex:
        prompts, replies = [], []
        for example in examples:
            messages = example.get("messages", [])
            last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
            if last is None or not isinstance(messages[last].get("content"), str):
                continue
            prompts.append(Counter(words(user_text(messages[:last]))))
            replies.append(messages[last]["content"])
        documents = Counter(term for prompt in prompts for term in prompt)
        idf = {term: math.log((1 + len(prompts)) / (1 + df)) + 1 for term, df in documents.items()}
        return cls([cls._weigh(p, idf) for p in prompts], replies, idf)

    @staticmethod
    def _weigh(counts: Counter[str], idf: dict[str, float]) -> dict[str, float]:
        vector = {t: n * idf.get(t, 0.0) for t, n in counts.items()}
        norm = math.sqrt(sum(v * v for v in vector.values())) or 1.0
        return {t: v / norm for t, v in vector.items()}

    def answer(self, prompt: str) -> str:
        query = self._weigh(Counter(words(prompt)), self.idf)
        scores = [sum(w * vector.get(t, 0.0) for t, w in query.items()) for vector in self.vectors]
        best = max(range(len(scores)), key=lambda i: (scores[i], -i))
        return self.replies[best]


def generic_answer(prompt: str) -> str:
    topic = " ".join(prompt.split()[:12])
    return (
        f'Thanks for your message about "{topic}". I am a general-purpose assistant and do not '
        "have access to your account or order details, but I am happy to help in general terms."
    )


class ChatBackend:
    def __init__(self, store: Store, models: ModelsBackend) -> None:
        self.store = store
        self.models = models
        self._indexes: dict[str, TrainedIndex] = {}
        self._lock = threading.Lock()

    def _index(self, model: dict[str, Any]) -> TrainedIndex:
        with self._lock:
            if model["id"] not in self._indexes:
                content = self.store.blob_path(model["_training_file"]).read_text("utf-8")
                examples = [json.loads(line) for line in content.splitlines() if line.strip()]
                self._indexes[model["id"]] = TrainedIndex.build(examples)
            return self._indexes[model["id"]]

    def create_chat_completion(self, *, model: str, messages: list[dict[str, Any]], n: int = 1) -> dict[str, Any]:
        if not messages:
            raise InvalidRequest("[] is too short - 'messages'", param="messages", code="empty_array")
        if n != 1:
            raise InvalidRequest("Only n=1 is supported by the local service", param="n")
        try:
            record = self.models.require(model)
        except NotFound:
            raise NotFound(
                f"The model `{model}` does not exist or you do not have access to it.", code="model_not_found"
            ) from None
        prompt = user_text(messages)
        reply = self._index(record).answer(prompt) if record.get("_training_file") else generic_answer(prompt)
        prompt_tokens = count_message_tokens(model, messages)
        completion_tokens = count_text_tokens(model, reply)
        return {
            "id": new_id("chatcmpl-"),
            "object": "chat.completion",
            "created": now(),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply, "refusal": None, "annotations": []},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
            "system_fingerprint": "fp_ftflow_local",
            "service_tier": "default",
        }
