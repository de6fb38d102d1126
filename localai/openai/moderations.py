"""Moderations: OpenAI's `POST /v1/moderations`, emulated deterministically from word lists.

OpenAI's classifier is a model; this one flags a category when its text holds one of the
category's phrases (English and German, whole words, any case), so a test knows in advance
which lines are flagged and why. Scores: 0.5 + 0.1 per phrase found (at most 0.99) for a
flagged category, else a small fixed number derived from the text. A sub-category flags its
parent too (`self-harm/intent` -> `self-harm`), as OpenAI's results do. The response has
OpenAI's shape: one result per input, all 13 categories of the omni models, scores and the
input types each was applied to (`text`: only text is taken).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from localai.common import new_id
from localai.exceptions import InvalidRequest

MODELS = ("omni-moderation-latest", "omni-moderation-2024-09-26", "text-moderation-latest", "text-moderation-stable")
CATEGORIES = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
              "self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "sexual/minors", "violence",
              "violence/graphic")
PHRASES: dict[str, tuple[str, ...]] = {
    "harassment": ("you are worthless", "du bist wertlos", "halt die fresse", "shut up, idiot", "du vollidiot"),
    "harassment/threatening": ("i will find you", "ich finde dich", "you will regret this", "ich mach dich fertig"),
    "hate": ("subhuman", "untermensch"),
    "hate/threatening": ("should all be exterminated", "sollte man alle vergasen"),
    "illicit": ("how to make meth", "crystal meth kochen", "buy a stolen credit card",
                "gestohlene kreditkarten kaufen"),
    "illicit/violent": ("build a pipe bomb", "rohrbombe bauen"),
    "self-harm": ("hurt myself", "mir wehtun", "mich ritzen", "cut myself", "suicide", "suizid", "selbstmord"),
    "self-harm/intent": ("i want to kill myself", "ich will mich umbringen", "ich will nicht mehr leben",
                         "i want to die", "ich bringe mich um"),
    "self-harm/instructions": ("how to kill myself", "wie bringe ich mich um"),
    "sexual": ("explicit sex", "expliziter sex"),
    "sexual/minors": ("sex with a child", "sex mit einem kind"),
    "violence": ("kill them", "kill you", "töte dich", "bring dich um", "bringe ihn um", "stab him", "erstechen",
                 "erschießen", "shoot them", "zusammenschlagen", "beat him to death", "totschlagen"),
    "violence/graphic": ("blood everywhere", "überall blut", "dismembered", "zerstückelt"),
}
_PATTERNS = {category: re.compile(r"(?<!\w)(?:" + "|".join(re.escape(p) for p in phrases) + r")(?!\w)", re.IGNORECASE)
             for category, phrases in PHRASES.items()}


def _alternation(phrases: list[str]) -> str:
    """A regex for exactly these phrases, factored by common prefixes (a trie): `kill them|kill you`
    becomes `(?:k(?:i(?:l(?:l(?:\\ (?:t(?:h(?:e(?:m)))|y(?:o(?:u))))))))`, so at each position the engine tries
    one branch per distinct next character instead of every phrase in turn. It matches the same strings
    as the plain alternation (concatenation distributes over `|`)."""
    groups: dict[str, list[str]] = {}
    for phrase in phrases:
        if phrase:
            groups.setdefault(phrase[0], []).append(phrase[1:])
    if not groups:
        return ""
    body = "(?:" + "|".join(re.escape(first) + _alternation(rests) for first, rests in sorted(groups.items())) + ")"
    return body + "?" if "" in phrases else body  # one phrase is a prefix of others: they may stop here


# Every phrase of every category, with the categories' boundaries and flags: it finds a match in a text
# if and only if at least one category's pattern does. So when it finds none, no category can be hit,
# and `classify` answers without the 13 counts (most texts of a data set; 43 µs instead of 314 µs on
# the bench's texts).
_ANY_PHRASE = re.compile(r"(?<!\w)" + _alternation(sorted({p for ps in PHRASES.values() for p in ps})) + r"(?!\w)",
                         re.IGNORECASE)


def _floor(text: str) -> float:
    """The score of a category the text does not hit: fixed per text, < 0.001."""
    return round(int(hashlib.sha256(text.encode()).hexdigest()[:6], 16) / 16**6 * 1e-3, 9)


def classify(text: str) -> dict[str, Any]:
    """One moderation result for one text, in OpenAI's wire shape (`classify_reference`, faster)."""
    if _ANY_PHRASE.search(text) is not None:
        return classify_reference(text)
    return _result(dict.fromkeys(CATEGORIES, _floor(text)))


def classify_reference(text: str) -> dict[str, Any]:
    """One moderation result for one text: the plain definition, phrase counts per category."""
    hits = {category: len(pattern.findall(text)) for category, pattern in _PATTERNS.items()}
    for category in CATEGORIES:  # a sub-category flags its parent
        parent = category.split("/")[0]
        if "/" in category and hits[category] and not hits[parent]:
            hits[parent] = hits[category]
    floor = _floor(text)
    return _result({c: round(min(0.99, 0.5 + 0.1 * hits[c]), 6) if hits[c] else floor for c in CATEGORIES})


def _result(scores: dict[str, float]) -> dict[str, Any]:
    """A result in OpenAI's wire shape from its category scores (flagged at 0.5 and above)."""
    categories = {c: scores[c] >= 0.5 for c in CATEGORIES}
    return {"flagged": any(categories.values()), "categories": categories, "category_scores": scores,
            "category_applied_input_types": {c: ["text"] for c in CATEGORIES}}


def texts_of(value: Any) -> list[str]:
    """The texts of a request's `input`: a string, a list of strings, or a list of text (and image) parts."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    if isinstance(value, list) and all(isinstance(item, dict) for item in value):
        texts = [item["text"] for item in value if item.get("type") == "text" and isinstance(item.get("text"), str)]
        if len(texts) == len(value):
            return texts
        raise InvalidRequest("Only text inputs are supported by this service (no image_url).", param="input")
    raise InvalidRequest("'input' must be a string, an array of strings or an array of text parts.", param="input")


class ModerationsBackend:
    """Counts the requests it answered, so tests can tell a cached re-run made none."""

    def __init__(self) -> None:
        self.requests = 0
        self.inputs = 0

    def create_moderation(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or "input" not in body:
            raise InvalidRequest("Missing required parameter: 'input'.", param="input",
                                 code="missing_required_parameter")
        model = body.get("model") or "omni-moderation-latest"
        if model not in MODELS:
            raise InvalidRequest(f"The model `{model}` does not exist or you do not have access to it.",
                                 param="model", code="model_not_found")
        texts = texts_of(body["input"])
        self.requests += 1
        self.inputs += len(texts)
        return {"id": new_id("modr-"), "model": model, "results": [classify(text) for text in texts]}
