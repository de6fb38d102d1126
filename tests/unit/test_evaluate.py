from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from ftflow.settings import Settings
from tasks.evaluate import (
    EvalCase,
    aggregate,
    answer_f1,
    detect_language,
    evaluate,
    field_matches,
    prose_of,
    schema_valid,
    score,
    summarize,
    token_f1,
    with_system_prompt,
)
from tasks.intervals import bootstrap_interval
from tests.conftest import chat, write_jsonl

SCHEMA = {"type": "object", "required": ["antwort"], "properties": {"antwort": {"type": "string"}}}


@pytest.mark.parametrize(("answer", "reference", "expected"), [
    ("Die Bestellung ist unterwegs", "Die Bestellung ist unterwegs", 1.0),
    ("die bestellung", "Die Bestellung ist unterwegs", 2 * (1.0 * 0.5) / 1.5),
    ("completely different", "Die Bestellung ist unterwegs", 0.0),
    ("", "x", 0.0),
    ("", "", 1.0),
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
    assert totals["fields"]["antwort"]["exact_match_rate"] == 0.0  # neither answer has the reference's value


ORDER = {"antwort": "Hallo Anna, danke für deine Nachricht. Deine Bestellung AR-20417 ist heute mit der Post "
                    "unterwegs nach Innsbruck und kommt morgen bei dir an.",
         "bestellnummer": "AR-20417", "name": "Anna Huber", "stadt": "Innsbruck"}


def dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False)


def test_answers_sharing_only_their_keys_score_zero():
    # Issue 11: on raw JSON the keys alone gave 0.3.
    reference = {"antwort": "Ist unterwegs.", "bestellnummer": "AR-20417", "name": "Anna", "stadt": "Linz"}
    other = {"antwort": "Liegt bereit.", "bestellnummer": "BX-1", "name": "Max", "stadt": "Graz"}
    assert token_f1(dumps(other), dumps(reference)) >= 0.3  # the old metric: the keys counted
    assert answer_f1(dumps(other), dumps(reference)) == 0.0


def test_wrong_order_number_name_and_city_score_low():
    # Issue 11: on raw JSON this answer scored 0.85.
    wrong = {"antwort": ORDER["antwort"].replace("Anna", "Eva").replace("20417", "99999").replace("Innsbruck", "Salzburg"),
             "bestellnummer": "AR-99999", "name": "Eva Berger", "stadt": "Salzburg"}
    assert token_f1(dumps(wrong), dumps(ORDER)) > 0.75
    assert answer_f1(dumps(wrong), dumps(ORDER)) < 0.3
    assert field_matches(dumps(wrong), dumps(ORDER)) == {"antwort": False, "bestellnummer": False, "name": False,
                                                         "stadt": False}
    assert answer_f1(dumps(ORDER), dumps(ORDER)) == 1.0


def test_json_f1_is_field_by_field_on_values():
    reference = dumps({"kunde": {"name": "Anna"}, "artikel": ["Talblitz", "Helm"], "menge": 2})
    assert answer_f1(dumps({"kunde": {"name": "Anna"}, "artikel": ["Talblitz", "Helm"], "menge": 2}), reference) == 1
    # one of four fields wrong, one missing: (1 + 1 + 0 + 0) / 4
    assert answer_f1(dumps({"kunde": {"name": "Anna"}, "artikel": ["Talblitz"], "menge": 3}), reference) == 0.5
    # an extra field counts against the answer: 4 right of 5 fields
    assert answer_f1(dumps({"kunde": {"name": "Anna"}, "artikel": ["Talblitz", "Helm"], "menge": 2, "x": "y"}),
                     reference) == pytest.approx(0.8)
    assert answer_f1("Anna, Talblitz und Helm, 2 Stück", reference) == 0.0  # no field can be read from prose
    assert field_matches(dumps({"kunde": {"name": " Anna "}, "menge": "2"}), reference) == {
        "kunde.name": True, "artikel[0]": False, "artikel[1]": False, "menge": False}
    assert answer_f1("Die Bestellung ist unterwegs", "Die Bestellung ist da") == pytest.approx(0.75)
    assert field_matches("Die Bestellung ist unterwegs", "Die Bestellung ist da") == {}


def test_bootstrap_intervals_are_seeded_and_contain_the_mean():
    values = [1.0] * 30 + [0.0] * 10
    low, high = bootstrap_interval(values)
    assert low < 0.75 < high and high - low < 0.35
    assert bootstrap_interval(values) == [low, high]  # same seed, same interval
    assert bootstrap_interval([0.5] * 5) == [0.5, 0.5]
    assert bootstrap_interval([]) is None


def scored(index: int, answer: str, reference: str):
    return score(index, answer, reference, usage=SimpleNamespace(prompt_tokens=100, completion_tokens=20),
                 language="de", schema=None, price_in=0.3, price_out=1.2)


def test_every_rate_and_mean_has_an_interval_and_the_difference_is_paired():
    cases = [EvalCase(id=f"id{i}", messages=[], reference=dumps({**ORDER, "bestellnummer": f"AR-{i}"}))
             for i in range(20)]
    candidate = [scored(i, c.reference, c.reference) for i, c in enumerate(cases)]
    baseline = [scored(i, "Leider weiß ich das nicht.", c.reference) for i, c in enumerate(cases)]
    result = summarize("ft:m", cases, {"candidate": candidate, "baseline": baseline},
                       {"candidate": "ft:m", "baseline": "m"})
    figures = result["models"]["candidate"]
    assert figures["f1"] == 1.0 and set(figures["ci95"]) >= {"f1", "json_valid_rate", "language_rate",
                                                               "prompt_tokens_mean", "completion_tokens_mean"}
    assert figures["fields"]["bestellnummer"] == {"examples": 20, "exact_match_rate": 1.0, "ci95": [1.0, 1.0]}
    assert result["differences"]["baseline"]["f1"] == {"difference": 1.0, "ci95": [1.0, 1.0]}
    assert result["models"]["baseline"]["examples_sha256"] == figures["examples_sha256"] == result["examples_sha256"]


def test_zero_validation_examples_are_not_evaluated(tmp_path):
    (tmp_path / "validation.jsonl").write_text("")
    no_models = SimpleNamespace(chat_for=lambda *a, **k: pytest.fail("no model may be asked"))
    result, scores, cases = evaluate(tmp_path, "ft:gpt-4o-mini-2024-07-18:x::1", None, Settings(), no_models)
    assert result["status"] == "not evaluated" and result["examples"] == 0 and scores == {}
    assert "no held-out validation examples" in result["reason"]


def test_the_examples_digest_names_the_examples_not_their_order(tmp_path):
    examples = [chat(f"Frage {i}", f"Antwort {i}") for i in range(4)]
    write_jsonl(tmp_path / "a.jsonl", examples)
    write_jsonl(tmp_path / "b.jsonl", list(reversed(examples)))
    write_jsonl(tmp_path / "c.jsonl", examples[:3])
    from tasks.evaluate import cases_from, examples_digest

    digest = {name: examples_digest([c.id for c in cases_from(tmp_path / f"{name}.jsonl", 50)]) for name in "abc"}
    assert digest["a"] == digest["b"] != digest["c"]


def test_baseline_prompt_replaces_the_system_turn():
    messages = [{"role": "system", "content": "kurz"}, {"role": "user", "content": "Hallo"}]
    assert with_system_prompt(messages, "LANG") == [{"role": "system", "content": "LANG"}, messages[1]]
    assert with_system_prompt(messages, None) is messages


def test_fact_recall_and_invented_facts_per_example_and_overall_with_intervals():
    """Answers for the right intent but another customer: F1 stays high, fact recall falls."""
    def reference(i: int) -> str:
        return dumps({"intent": "bestellstatus", "antwort": f"Servus Jonas! Deine Bestellung AR-5{i:04d} "
                      "(Talblitz 300) kommt in 3 Werktagen an."})
    question = [{"role": "user", "content": ""}]
    cases = [EvalCase(id=f"id{i}", messages=question, reference=reference(i)) for i in range(20)]
    usage = SimpleNamespace(prompt_tokens=100, completion_tokens=20)
    answers = [reference(i) if i % 2 else reference(i + 1000) for i in range(20)]  # every other: a wrong number
    scores = [score(i, answers[i], c.reference, usage=usage, language="de", schema=None, price_in=0.3,
                    price_out=1.2, inputs=f"Wo ist AR-5{i:04d}, mein Talblitz 300?") for i, c in enumerate(cases)]
    assert [s.fact_recall for s in scores[:2]] == [0.5, 1.0]
    assert scores[0].missed_facts == ["AR-50000"] and scores[0].invented_facts == ["AR-51000"]
    figures = summarize("ft:m", cases, {"candidate": scores}, {"candidate": "ft:m"})["models"]["candidate"]
    assert figures["fact_recall"] == 0.75 and figures["f1"] > 0.9
    assert figures["invented_fact_rate"] == 0.5
    low, high = figures["ci95"]["fact_recall"]
    assert low < 0.75 < high
