"""The local service's moderations: the fast `classify` answers exactly as the plain definition, the
route's bytes are FastAPI's, and the client reads the same verdicts from the JSON as from the SDK's models."""

from __future__ import annotations

import json
import random

import pytest

from localai.openai.moderations import _ANY_PHRASE, _PATTERNS, CATEGORIES, PHRASES, classify, classify_reference

PLAIN = ["", "Wo ist meine Bestellung AR-1?", "Der Akku hat ein Messer-Symbol.", "Rückgabe bitte, danke.\nMorgen?",
         "skill you", "kill youth", "_kill you", "kill\nyou", "killyou", "bring dich umher", "Suizidal?",
         "ich will mich umbringenn", "you are worthlessly", "emoji 🚲 ÄÖÜ ß straße", "i want to kill", "überall",
         "ERSCHIESSEN"]  # IGNORECASE matches character by character: ß is not ss
FLAGGED = ["I will kill you.", "KILL YOU", "Kill Them!", "Ich will mich umbringen, das Rad ist kaputt.",
           "ich will nicht mehr leben", "ÜBERALL BLUT", "Überall Blut und zerstückelt", "TÖTE DICH", "töte dich",
           "erschießen", "ERSCHIEẞEN", "ſuicide",  # a long s is an s to IGNORECASE
           "\u212aill you",  # the Kelvin sign is a k to IGNORECASE
           "I want to kill myself, how to kill myself", "i want to die. suicide. selbstmord. suizid.",
           "bring dich um, bringe ihn um, ich bringe mich um", "(kill you)", "kill you,kill you;kill you",
           "sex with a child, explicit sex",
           # phrases overlapping, sharing words, or one inside another's neighbourhood
           "wie bringe ich mich um", "ich bringe ihn um", "bring dich um bringe ihn um", "i want to kill them",
           "how to kill myself i want to kill myself", "suicide-suicide", "töte dich!töte dich", "Du vollidiot, halt die Fresse, shut up, idiot",
           "you will regret this. I will find you", "how to make meth and build a pipe bomb",
           "dismembered\nblood everywhere", "Untermensch", "subhuman subhuman subhuman subhuman subhuman subhuman"]


def random_texts(n: int, seed: int = 11) -> list[str]:
    """Phrases, their fragments and neighbours, in random case, glued with spaces, letters, punctuation."""
    rng = random.Random(seed)
    phrases = [p for ps in PHRASES.values() for p in ps]
    pieces = [*phrases, *(p[: rng.randint(1, len(p))] for p in phrases), *(p[rng.randint(0, len(p) - 1):] for p in phrases),
              "Bestellung", "Rahmen", "Fahrrad", "ä", "ß", "ı", "İ", "_", "x", "1"]
    glue = [" ", "", "\n", ", ", ".", "-", "é", "a"]
    texts = []
    for _ in range(n):
        parts = [rng.choice(pieces) for _ in range(rng.randint(1, 6))]
        text = "".join(rng.choice(glue) + part for part in parts)
        texts.append("".join(ch.upper() if rng.random() < 0.3 else ch for ch in text))
    return texts


@pytest.mark.parametrize("text", PLAIN + FLAGGED)
def test_classify_is_the_plain_definition(text):
    assert classify(text) == classify_reference(text)
    assert json.dumps(classify(text)) == json.dumps(classify_reference(text))  # the same keys in the same order


def test_the_examples_are_flagged_as_named():
    assert not any(classify(t)["flagged"] for t in PLAIN)
    assert all(classify(t)["flagged"] for t in FLAGGED)


def test_the_prefilter_finds_a_phrase_exactly_when_some_category_does():
    texts = PLAIN + FLAGGED + random_texts(3000)
    for text in texts:
        assert (_ANY_PHRASE.search(text) is not None) == any(p.search(text) for p in _PATTERNS.values()), text
    flagged = [t for t in texts if classify(t)["flagged"]]
    assert 300 < len(flagged) < len(texts) - 300  # both paths ran often
    assert [classify(t) for t in texts] == [classify_reference(t) for t in texts]


def test_a_text_without_a_phrase_scores_its_fixed_floor_everywhere():
    result = classify("Wo ist meine Bestellung AR-1?")
    assert list(result["category_scores"]) == list(CATEGORIES) == list(result["categories"])
    assert len(set(result["category_scores"].values())) == 1 and 0 <= result["category_scores"]["hate"] < 0.001


def test_the_routes_bytes_and_headers_are_what_fastapi_gives_a_dict():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from localai.openai.routes import json_response

    body = {"id": "modr-1", "model": "omni-moderation-latest", "results": [classify(t) for t in PLAIN + FLAGGED]}
    app = FastAPI()

    @app.post("/as-dict")
    def as_dict() -> dict:
        return body

    @app.post("/as-bytes")
    def as_bytes():
        return json_response(body)

    with TestClient(app) as http:
        old, new = http.post("/as-dict"), http.post("/as-bytes")
    assert old.content == new.content and b"e-" in new.content  # small scores are written 1.2e-5, not 1.2e-05
    assert dict(old.headers) == dict(new.headers)


def test_the_client_reads_the_same_verdicts_from_the_json_as_from_the_sdks_models():
    from openai._models import construct_type
    from openai.types import ModerationCreateResponse

    from tasks.moderation import flagged_categories, flagged_categories_reference

    results = [classify(t) for t in PLAIN + FLAGGED + random_texts(500, seed=3)]
    tie = classify("I want to kill myself")  # self-harm and self-harm/intent score the same: the specific one first
    results.append(tie)
    extra = classify("kill you")
    extra["categories"]["future-category"], extra["category_scores"]["future-category"] = True, 0.95
    results.append(extra)
    body = {"id": "modr-1", "model": "omni-moderation-latest", "results": results}
    wire = json.loads(json.dumps(body))
    expected = flagged_categories_reference(construct_type(type_=ModerationCreateResponse, value=wire))
    assert flagged_categories(wire) == expected
    assert expected[-2] == ["self-harm/intent", "self-harm"] and expected[-1] == ["future-category", "violence"]
