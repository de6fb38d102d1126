from __future__ import annotations

from types import SimpleNamespace

import pytest

from tasks.evaluate import aggregate, detect_language, prose_of, schema_valid, score, token_f1, with_system_prompt

SCHEMA = {"type": "object", "required": ["antwort"], "properties": {"antwort": {"type": "string"}}}


@pytest.mark.parametrize(("answer", "reference", "expected"), [
    ("Die Bestellung ist unterwegs", "Die Bestellung ist unterwegs", 1.0),
    ("die bestellung", "Die Bestellung ist unterwegs", 2 * (1.0 * 0.5) / 1.5),
    ("completely different", "Die Bestellung ist unterwegs", 0.0),
    ("", "x", 0.0),
    ("a a b", "a b b", 2 / 3),  # multiset overlap: one a, one b
])
def test_token_f1(answer, reference, expected):
    assert token_f1(answer, reference) == pytest.approx(expected)


def test_language_is_detected_on_the_prose_of_json_answers():
    german = '{"intent": "akku", "antwort": "Der Akku deines Fahrrads hält nicht mehr lange, bring ihn bitte in die Werkstatt."}'
    assert prose_of(german).startswith("akku Der Akku")
    assert detect_language(prose_of(german)) == "de"
    assert detect_language("Thanks for your message, I am happy to help you with your order today.") == "en"
    assert detect_language("12345 !!!") is None


def test_schema_validity():
    assert schema_valid('{"antwort": "ja"}', SCHEMA) is True
    assert schema_valid('{"answer": "yes"}', SCHEMA) is False
    assert schema_valid("kein JSON", SCHEMA) is False
    assert schema_valid("kein JSON", None) is None


def test_score_and_aggregate_price_the_measured_usage():
    usage = SimpleNamespace(prompt_tokens=1000, completion_tokens=100)
    good = score(0, '{"antwort": "Deine Bestellung ist heute unterwegs zu dir nach Hause."}',
                 '{"antwort": "Deine Bestellung ist unterwegs."}', usage=usage, language="de", schema=SCHEMA,
                 price_in=0.30, price_out=1.20)
    bad = score(1, "I cannot help with that request, sorry about it.", '{"antwort": "x"}', usage=usage,
                language="de", schema=SCHEMA, price_in=0.30, price_out=1.20)
    assert good.json_valid and good.schema_valid and good.in_language and good.f1 > 0.5
    assert not bad.json_valid and bad.schema_valid is False and bad.language == "en" and bad.f1 == 0.0
    assert good.cost_usd == pytest.approx((1000 * 0.30 + 100 * 1.20) / 1e6)
    totals = aggregate([good, bad])
    assert totals["json_valid_rate"] == 0.5 and totals["schema_valid_rate"] == 0.5 and totals["language_rate"] == 0.5
    assert totals["prompt_tokens_mean"] == 1000 and totals["cost_usd"] == pytest.approx(2 * good.cost_usd)


def test_baseline_prompt_replaces_the_system_turn():
    messages = [{"role": "system", "content": "kurz"}, {"role": "user", "content": "Hallo"}]
    assert with_system_prompt(messages, "LANG") == [{"role": "system", "content": "LANG"}, messages[1]]
    assert with_system_prompt(messages, None) is messages
