"""Chat completions, simulated honestly and deterministically.

- A base model does not know the training data: it answers generically. It follows the
  format and language instructions of its system prompt at a seeded rate
  (`instruction_following`, default 0.8): asked for JSON it answers
  `{"answer": ...}` (`{"antwort": ...}` in German), asked for German, English or French it
  answers in that language; otherwise, and when a draw says it does not follow, it answers
  in English plain text. Each draw is seeded by the request (`seed`, model, system prompt,
  user turns), so the same request gets the same answer and the baseline's format and
  language rates depend on the prompt the pipeline sends.
- A fine-tuned model answers with the final assistant reply of the training conversation
  most similar to the request (TF-IDF cosine over the user turns). So what it says is
  exactly what it was trained on: a useful dataset changes its answers, a broken one does not.
  A model trained with DPO answers with the preferred output of the most similar pair, never
  the non-preferred one: it takes on the preferred style.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from localai.common import new_id, now
from localai.engine.models import ModelsBackend
from localai.engine.tokens import count_message_tokens, count_text_tokens
from localai.engine.training_data import sequences
from localai.exceptions import InvalidRequest, NotFound
from localai.store import Store

WORD = re.compile(r"\w+", re.UNICODE)
JSON_INSTRUCTION = re.compile(r"\bjson\b", re.IGNORECASE)
# An explicit instruction names the language as the answer's ("auf Deutsch", "in German"):
# a prompt that merely mentions another language ("auch wenn der Kunde Englisch schreibt")
# does not switch it.
LANGUAGE_INSTRUCTIONS = {
    "de": re.compile(r"\b(auf deutsch|in german|german only)\b", re.IGNORECASE),
    "en": re.compile(r"\b(auf englisch|in english|english only)\b", re.IGNORECASE),
    "fr": re.compile(r"\b(auf französisch|in french|en français)\b", re.IGNORECASE),
}
GENERIC = {
    "en": (
        'Thanks for your message about "{topic}". I am a general-purpose assistant and do not '
        "have access to your account or order details, but I am happy to help in general terms."
    ),
    "de": (
        "Danke für deine Nachricht zu „{topic}“. Ich bin ein allgemeiner Assistent und habe keinen "
        "Zugriff auf dein Kundenkonto oder deine Bestelldaten, helfe dir aber gern allgemein weiter."
    ),
    "fr": (
        "Merci pour votre message au sujet de « {topic} ». Je suis un assistant généraliste et je n'ai "
        "pas accès à votre compte ni à vos commandes, mais je vous aide volontiers de manière générale."
    ),
}
JSON_KEY = {"en": "answer", "de": "antwort", "fr": "reponse"}


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


@dataclass(frozen=True)
class Instructions:
    """What a system prompt asks of the answer's form: JSON or not, and a language."""

    json: bool
    language: str | None

    @classmethod
    def of(cls, system: str) -> Instructions:
        found = [(m.start(), code) for code, rx in LANGUAGE_INSTRUCTIONS.items() if (m := rx.search(system))]
        return cls(json=bool(JSON_INSTRUCTION.search(system)), language=min(found)[1] if found else None)


def follows(rate: float, *key: object) -> bool:
    """One seeded draw: does the base model follow this instruction for this request?"""
    digest = hashlib.sha256(":".join(map(str, key)).encode()).digest()
    return random.Random(digest).random() < rate


def base_answer(messages: list[dict[str, Any]], *, model: str, seed: int, rate: float) -> str:
    """A generic answer in the form the system prompt asks for, each instruction followed at `rate`."""
    system = "\n".join(
        m["content"] for m in messages if m.get("role") in ("system", "developer") and isinstance(m.get("content"), str)
    )
    prompt = user_text(messages)
    asked = Instructions.of(system)
    language = asked.language if asked.language and follows(rate, seed, model, "language", system, prompt) else "en"
    text = GENERIC[language].format(topic=" ".join(prompt.split()[:12]))
    if asked.json and follows(rate, seed, model, "format", system, prompt):
        return json.dumps({JSON_KEY[language]: text}, ensure_ascii=False)
    return text


class ChatBackend:
    def __init__(self, store: Store, models: ModelsBackend, *, instruction_following: float = 0.8) -> None:
        self.store = store
        self.models = models
        self.instruction_following = instruction_following
        self._indexes: dict[str, TrainedIndex] = {}
        self._lock = threading.Lock()

    def _index(self, model: dict[str, Any]) -> TrainedIndex:
        with self._lock:
            if model["id"] not in self._indexes:
                with open(self.store.blob_path(model["_training_file"]), encoding="utf-8") as f:
                    # a preference pair teaches its preferred output (the first sequence)
                    examples = [sequences(json.loads(line))[0] for line in f if line.strip()]
                self._indexes[model["id"]] = TrainedIndex.build(examples)
            return self._indexes[model["id"]]

    def create_chat_completion(
        self, *, model: str, messages: list[dict[str, Any]], n: int = 1, seed: int | None = None
    ) -> dict[str, Any]:
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
        if record.get("_training_file"):
            reply = self._index(record).answer(user_text(messages))
        else:
            reply = base_answer(messages, model=model, seed=seed or 0, rate=self.instruction_following)
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
