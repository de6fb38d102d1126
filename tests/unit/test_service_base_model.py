"""The simulated base model follows its system prompt's format and language at a seeded rate,
so a baseline's JSON and language rates depend on the prompt the pipeline sends."""

from __future__ import annotations

import json

import pytest

from localai.engine.chat import Instructions, base_answer
from tasks.evaluate import detect_language, parse_json, prose_of

GERMAN_JSON = "Du bist der Alpenrad-Support. Antworte auf Deutsch als JSON."
PRODUCTION = ("Antworte immer auf Deutsch, auch wenn der Kunde Englisch schreibt. Antworte ausschließlich mit "
              "einem JSON-Objekt mit genau zwei Feldern: 'intent' und 'antwort'.")
QUESTIONS = [f"Where is my order AR-{i}? It has not arrived yet." for i in range(120)]


def rates(system: str | None, rate: float, seed: int = 0, *, langdetect: bool = False) -> tuple[float, float]:
    """(JSON rate, German rate) of the base model's answers to QUESTIONS under a system prompt;
    German as the pipeline's evaluation detects it (langdetect), or by the German template."""
    answers = [
        base_answer(([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": q}],
                    model="gpt-4o-mini", seed=seed, rate=rate)
        for q in QUESTIONS
    ]
    json_rate = sum(parse_json(a) is not None for a in answers) / len(answers)
    if langdetect:
        german = sum(detect_language(prose_of(a)) == "de" for a in answers) / len(answers)
    else:
        german = sum("Danke für deine Nachricht" in a for a in answers) / len(answers)
    return json_rate, german


@pytest.mark.parametrize("system", [GERMAN_JSON, PRODUCTION])
def test_instructions_are_followed_at_the_documented_rate(system):
    json_rate, german = rates(system, rate=0.8, langdetect=True)
    assert 0.68 <= json_rate <= 0.92 and 0.68 <= german <= 0.92, (json_rate, german)


def test_without_instructions_it_answers_english_plain_text():
    assert rates("Du bist der Alpenrad-Support.", rate=0.8) == (0.0, 0.0)
    assert rates(None, rate=1.0) == (0.0, 0.0)


def test_the_rate_is_a_setting_and_the_draws_are_seeded():
    assert rates(GERMAN_JSON, rate=1.0) == (1.0, 1.0)
    assert rates(GERMAN_JSON, rate=0.0) == (0.0, 0.0)
    messages = [{"role": "system", "content": GERMAN_JSON}, {"role": "user", "content": QUESTIONS[0]}]
    answers = {base_answer(messages, model="gpt-4o-mini", seed=7, rate=0.5) for _ in range(5)}
    assert len(answers) == 1
    assert rates(GERMAN_JSON, rate=0.5, seed=1) != rates(GERMAN_JSON, rate=0.5, seed=2)


def test_mentioning_a_language_is_not_an_instruction_to_use_it():
    assert Instructions.of(PRODUCTION) == Instructions(json=True, language="de")
    assert Instructions.of("Always answer in German, even when the customer writes English.").language == "de"
    assert Instructions.of("Answer in English.") == Instructions(json=False, language="en")
    assert json.loads(base_answer([{"role": "system", "content": "Reply in JSON."}, {"role": "user", "content": "Hi"}],
                                  model="m", seed=0, rate=1.0)) == {"answer": base_answer(
        [{"role": "user", "content": "Hi"}], model="m", seed=0, rate=1.0)}
