from __future__ import annotations

import json
import random
import re
from collections import Counter

import pytest
from stdnum import luhn

from bench.pii_quality import GOAL_PRECISION, GOAL_RECALL, load_cases, new_spans, score
from ftflow.settings import Settings
from tasks.pii import PII_TYPES, find_pii, scan_message, scan_text
from tasks.transform import TransformOptions, normalize_example


def mask(text: str, regions: tuple[str, ...] = ("DE", "AT", "CH", "GB", "US")) -> tuple[str, Counter[str]]:
    counts: Counter[str] = Counter()
    return scan_text(text, "mask", counts, regions), counts


# --- the reproductions of issue 11 ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked", "kind"),
    [
        ("iban de89 3704 0044 0532 0130 00", "iban [IBAN]", "iban"),  # was: iban de89 3704 [PHONE]
        ("IBAN DE89-3704-0044-0532-0130-00", "IBAN [IBAN]", "iban"),
        ("Tel +43 (0) 512 / 123 456", "Tel [PHONE]", "phone"),
        ("Hotline 0 800 123 456", "Hotline [PHONE]", "phone"),
        ("Call (555) 123-4567", "Call [PHONE]", "phone"),
        ("Host 2001:db8::1", "Host [IP]", "ip"),
        ("Host fe80::1ff:fe23:4567:890a", "Host [IP]", "ip"),
        ("Wien 0043 512 123456", "Wien [PHONE]", "phone"),  # was: [CREDIT_CARD]
    ],
)
def test_issue_leaks_are_masked_whole(text, masked, kind):
    assert mask(text) == (masked, {kind: 1})


@pytest.mark.parametrize("text", ["Kundennummer 0123456", "Auftrag 0815-4711", "Bestellung AR-0123456"])
def test_issue_identifiers_are_not_phones(text):
    assert mask(text) == (text, {})


def test_random_tracking_numbers_are_neither_cards_nor_phones():
    rng = random.Random(11)
    numbers = ["".join(rng.choice("0123456789") for _ in range(rng.randint(13, 16))) for _ in range(600)]
    for template in ("Ihre Sendungsnummer: {}", "Tracking {}", "Paket {} ist unterwegs"):
        found = [n for n in numbers if find_pii(template.format(n))]
        assert found == [], f"{template}: {len(found)} of {len(numbers)} taken for PII, e.g. {found[:3]}"
    bare = Counter(span.kind for n in numbers for span in find_pii(n))
    # Bare, only a major issuer's 15/16-digit number that passes Luhn is a card (about 1 in 70 here).
    cards = [n for n in numbers if MAJOR_CARD.fullmatch(n) and luhn.is_valid(n)]
    assert 0 < len(cards) < len(numbers) // 50
    assert bare["credit_card"] == len(cards) and bare["phone"] <= len(numbers) // 100, bare


MAJOR_CARD = re.compile(  # Visa, Mastercard (51-55, 2221-2720), Amex, Discover, JCB
    r"4\d{15}|5[1-5]\d{14}|2(?:22[1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720)\d{12}|3[47]\d{13}"
    r"|(?:6011|64[4-9]\d|65\d\d|35(?:2[89]|[3-8]\d))\d{12}"
)


@pytest.mark.parametrize("text, card", [
    ("Die Nummer ist 4744311485456234, bitte prüfen.", "4744311485456234"),  # Visa, no card word
    ("Bitte 373719196607505 aus meinem Profil löschen", "373719196607505"),  # Amex, 15 digits
    ("Hier: 6011742959382160", "6011742959382160"),  # Discover
])
def test_a_bare_number_in_a_card_range_that_passes_luhn_is_a_card(text, card):
    assert [text[s.start:s.end] for s in find_pii(text) if s.kind == "credit_card"] == [card]


@pytest.mark.parametrize("text", [
    "Auftragsnummer 4356150211432799", "Kundennummer 5425713954072488", "Sendungsnummer 377364382590318",
    "Tracking number 4987903483189878", "Die Nummer ist 9438983351442678", "Die Nummer ist 4123489694480203",
])
def test_identifiers_and_numbers_outside_the_rule_stay_unmasked(text):
    assert mask(text) == (text, {})


def test_tool_call_arguments_and_names_are_scanned():
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "rueckruf_06601234567", "arguments": '{"telefon": "+43 660 1234567", "anzahl": 2}'},
    }
    example = {
        "messages": [
            {"role": "user", "content": "Ruf mich an"},
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
            {"role": "assistant", "content": "Erledigt."},
        ]
    }
    out, stats = normalize_example(example, TransformOptions())
    function = out["messages"][1]["tool_calls"][0]["function"]
    assert json.loads(function["arguments"]) == {"telefon": "[PHONE]", "anzahl": 2}
    assert stats.pii == {"phone": 1}  # the name's digits follow "_": part of an identifier
    name_with_phone = {"role": "user", "name": "06601234567", "content": "hallo"}
    masked, counts = scan_message(name_with_phone, "mask")
    assert masked["name"] == "PHONE" and counts == {"phone": 1}  # names allow no brackets


def test_false_positives_no_longer_corrupt_assistant_targets():
    answer = json.dumps({"intent": "bestellstatus", "antwort": "Auftrag 0815-4711 ist unterwegs, Kundennummer 0123456."},
                        ensure_ascii=False)
    example = {"messages": [{"role": "user", "content": "Wo ist mein Paket?"}, {"role": "assistant", "content": answer}]}
    out, stats = normalize_example(example, TransformOptions())
    assert out["messages"][1]["content"] == answer and not stats.pii


# --- the labelled set ----------------------------------------------------------------------


def test_labelled_set_is_well_formed():
    cases = load_cases()
    assert len(cases) >= 300
    for case in cases:
        for span in case["spans"]:
            assert span["type"] in PII_TYPES
            assert case["text"][span["start"] : span["end"]] == span["value"], case
    kinds = Counter(span["type"] for case in cases for span in case["spans"])
    assert min(kinds[k] for k in PII_TYPES) >= 20, kinds
    assert sum(1 for case in cases if not case["spans"]) >= 100  # hard negatives and clean text


def test_labelled_set_meets_the_quality_goal():
    result = score(load_cases(), new_spans)
    below = {k: v for k, v in result.items() if v["precision"] < GOAL_PRECISION or v["recall"] < GOAL_RECALL}
    assert not below, below


# --- masking keeps every trained string usable --------------------------------------------


def test_json_answers_stay_valid_json_and_untouched_json_keeps_its_bytes():
    answer = '{"antwort": "Schreib an anna@example.com\\noder ruf 0660 1234567 an", "liste": ["8.8.8.8", 3]}'
    masked, counts = mask(answer)
    assert json.loads(masked) == {"antwort": "Schreib an [EMAIL]\noder ruf [PHONE] an", "liste": ["[IP]", 3]}
    assert counts == {"email": 1, "phone": 1, "ip": 1}
    clean = '{"intent":"akku",   "antwort": "Bestellung AR-12345 kommt am 24.12.2026"}'
    assert mask(clean) == (clean, {})


def test_masked_json_keeps_the_original_style():
    assert mask('{"a":"x@example.com","b":[1,2]}')[0] == '{"a":"[EMAIL]","b":[1,2]}'
    assert mask('{"a": "x@example.com", "b": "M\\u00fcnchen"}')[0] == '{"a": "[EMAIL]", "b": "M\\u00fcnchen"}'
    assert mask('{"a": "x@example.com", "b": "München"}')[0] == '{"a": "[EMAIL]", "b": "München"}'


def test_json_keys_are_context_for_their_values():
    assert mask('{"kartennummer": "4111111111111111"}')[0] == '{"kartennummer": "[CREDIT_CARD]"}'
    assert mask('{"sendungsnummer": "4111111111111111"}')[1] == {}


def test_text_parts_are_scanned():
    message = {"role": "user", "content": [{"type": "text", "text": "IP 10.0.0.1"}, {"type": "image_url"}]}
    masked, counts = scan_message(message, "mask")
    assert masked["content"] == [{"type": "text", "text": "IP [IP]"}, {"type": "image_url"}] and counts == {"ip": 1}


def test_report_counts_without_changing_anything():
    message = {"role": "user", "content": "mail a.b@example.com"}
    same, counts = scan_message(message, "report")
    assert same is message and counts == {"email": 1}


@pytest.mark.parametrize(
    ("text", "kind", "masked"),
    [
        ("mail anna.muster@example.com now", "email", "mail [EMAIL] now"),
        ("ruf +43 660 123 4567 an", "phone", "ruf [PHONE] an"),
        ("ruf 0660/1234567 an", "phone", "ruf [PHONE] an"),
        ("card 4111 1111 1111 1111.", "credit_card", "card [CREDIT_CARD]."),
        ("IBAN DE89 3704 0044 0532 0130 00 bitte", "iban", "IBAN [IBAN] bitte"),
        ("from 192.168.10.1 today", "ip", "from [IP] today"),
    ],
)
def test_each_type_is_masked(text, kind, masked):
    assert mask(text) == (masked, {kind: 1})


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("Tel. 0512 123456 / 0660 1234567", "Tel. [PHONE] / [PHONE]"),
        ("(0660 1234567)", "([PHONE])"),
        ("Ruf 0660 1234567, 2 Stück", "Ruf [PHONE], 2 Stück"),
        ("Telefon-Nr. 0512 123456, Rahmen-Nr. 0660123456", "Telefon-Nr. [PHONE], Rahmen-Nr. 0660123456"),
    ],
)
def test_phone_boundaries(text, masked):
    assert mask(text)[0] == masked


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112",  # fails the Luhn check
        "IBAN GB00 WEST ABCD EFGH IJKL MN",  # fails mod 97
        "version 1.2.3.4.5",
        "am 24.12.2026 um 10:30",
        "Preis 1.299.000 €, PLZ 6020, Version 1.2.3.4",
    ],
)
def test_lookalikes_are_left_alone(text):
    assert mask(text) == (text, {})


# --- regions -------------------------------------------------------------------------------


def test_national_formats_follow_the_regions_setting():
    assert mask("Call (212) 555-0123")[1] == {"phone": 1}
    assert mask("Call (212) 555-0123", regions=("DE", "AT"))[1] == {}
    assert mask("Ruf +1 212 555 0123", regions=("DE",))[1] == {"phone": 1}  # international: any region


def test_regions_setting_is_validated_and_reaches_the_transform(monkeypatch):
    settings = Settings(pii_regions=["fr", "DE"])
    assert TransformOptions.from_settings(settings).pii_regions == ("FR", "DE")
    monkeypatch.setenv("FTFLOW_PII_REGIONS", "de, at")
    assert Settings().pii_regions == ["DE", "AT"]
    with pytest.raises(ValueError, match="unknown phone region"):
        Settings(pii_regions=["XX"])
