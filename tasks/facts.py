"""Facts: the identifiers, numbers, amounts, dates and names an answer states, and whether they are right.

Word F1 cannot tell "Bestellung AR-52603" from "Bestellung AR-17044": one word in twenty
differs. What an operator needs to know is whether the answer gets the *facts* right, so:

- a **fact** is a span of one of these kinds, each with a normal form for comparison:
  - `email`, `phone`, `iban`, `credit_card`, `ip`: found and validated by `tasks.pii`
    (`phonenumbers` for phones, `python-stdnum` for IBANs, Luhn and issuer ranges for cards);
  - `date`: `12.03.2026`, `2026-03-12`, `12. März 2026`, `March 12, 2026` (checked by
    `datetime`: a 31.02. is no date), normalised to ISO;
  - `amount`: a number with a currency (`49,90 €`, `EUR 1.200`, `$5`), normalised to
    `<value> <ISO code>`;
  - `identifier`: a token holding both letters and digits, or digits joined by dashes or
    slashes (`AR-52603`, `RMA2024/17`);
  - `number`: any other number (`20 km` -> `20`);
  - `product`: capitalised words followed by a model number (`Talblitz 300`);
  - `person`: a capitalised word after a greeting or title (`Hallo Jonas`, `Dear Anna`, `Frau Huber`);
  - `place`: capitalised words after `in`/`nach`/`aus`/`from`/`to`/`near`, unless the word is
    one of the common nouns that follow those words (`in Ordnung`, `nach Hause`).
  Names without such a cue are not found: no named-entity model for German installs from
  PyPI with its weights, and capitalisation alone marks every German noun. How precise and
  complete this is on labelled cases: `tests/data/fact_cases.jsonl` (`tests/unit/test_facts.py`).
- a reference's **grounded facts** are those that also appear in the input turns: what the
  model could know from the conversation. **Fact recall** is the share of them the answer
  states; None when the reference has none (the example then does not count).
- an answer's **invented facts** are those that appear neither in the input nor in the
  reference.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from tasks.pii import find_pii

MONTHS = {name: i for i, names in enumerate((
    ("januar", "jänner", "january", "jan"), ("februar", "feber", "february", "feb"), ("märz", "march", "mar"),
    ("april", "apr"), ("mai", "may"), ("juni", "june", "jun"), ("juli", "july", "jul"),
    ("august", "aug"), ("september", "sep", "sept"), ("oktober", "october", "okt", "oct"),
    ("november", "nov"), ("dezember", "december", "dez", "dec")), start=1) for name in names}
_MONTH = "|".join(sorted(MONTHS, key=len, reverse=True))
CURRENCIES = {"€": "EUR", "eur": "EUR", "euro": "EUR", "$": "USD", "usd": "USD", "chf": "CHF", "fr.": "CHF",
              "£": "GBP", "gbp": "GBP"}
_CURRENCY = r"€|\$|£|(?i:eur|euro|usd|chf|gbp)\b|Fr\."
_NUMBER = r"\d{1,3}(?:[.,' ]\d{3})+(?:[.,]\d{1,2})?|\d+(?:[.,]\d+)?"
GREETINGS = ("hallo", "hi", "hello", "hey", "servus", "moin", "grüezi", "liebe", "lieber", "dear", "sehr geehrte",
             "sehr geehrter", "danke", "thanks", "thank you", "herr", "frau", "mr", "mrs", "ms")
PLACE_WORDS = ("in", "nach", "aus", "from", "to", "near", "bei")
# Capitalised words that follow a place preposition but name no place (German nouns are capitalised).
NOT_PLACES = frozenset({"ordnung", "kürze", "zukunft", "zeit", "ruhe", "hause", "haus", "eile", "höhe", "form",
    "bezug", "summe", "absprache", "rechnung", "zahlung", "arbeit", "bearbeitung", "betrieb", "reparatur",
    "kontakt", "verbindung", "frage", "zusammenarbeit", "bestellung", "teilen", "raten", "stunden", "tagen",
    "wochen", "monaten", "minuten", "werktagen", "deinem", "deiner", "deinen", "deine", "dein", "ihrem",
    "ihrer", "ihren", "unserem", "unserer", "unseren", "unsere", "euro"})

# A capitalised word: an upper-case letter, then letters (umlauts too), a hyphen joining parts.
_CAP = r"[A-ZÄÖÜ][a-zäöüßA-ZÄÖÜ]+(?:-[A-ZÄÖÜ][a-zäöüß]+)*"
PATTERNS = [  # the order is the priority: an earlier kind claims its characters first
    ("date", re.compile(rf"(?<![\w.])(?:(\d{{1,2}})\.(\d{{1,2}})\.(\d{{4}})|(\d{{4}})-(\d{{2}})-(\d{{2}})"
                        rf"|(\d{{1,2}})\.? ?({_MONTH})\.? (\d{{4}})|({_MONTH})\.? (\d{{1,2}}),? (\d{{4}}))(?!\w)",
                        re.IGNORECASE)),
    ("amount", re.compile(rf"(?:({_CURRENCY}) ?({_NUMBER})|({_NUMBER}) ?({_CURRENCY}))(?![\w])")),
    ("identifier", re.compile(r"(?<![\w-])(?=[\w-]*\d)(?=[\w/-]*[A-Za-z]|\d+[-/]\d)[A-Za-z0-9]+(?:[-/][A-Za-z0-9]+)*"
                              r"(?![\w-])")),
    ("product", re.compile(rf"(?<!\w)((?:{_CAP} ){{1,2}}\d{{2,5}}[A-Za-z]?)(?![\w-])")),
    ("number", re.compile(rf"(?<![\w.,])({_NUMBER})(?![\w]|[.,]\d)")),
    ("person", re.compile(rf"(?i:\b(?:{'|'.join(GREETINGS)}))[ ,]+({_CAP})(?!\w)")),
    ("place", re.compile(rf"\b(?:{'|'.join(PLACE_WORDS)}) ((?:{_CAP})(?: {_CAP})?)(?![\w-])")),
]


@dataclass(frozen=True)
class Fact:
    kind: str
    text: str  # as written
    value: str  # normal form: what two facts are compared by


def _number(text: str) -> str:
    """`1.200,50` / `1,200.50` / `1 200` -> `1200.50`; `20` -> `20` (the last separator with 1-2 digits is decimal)."""
    digits = re.sub(r"[^\d.,]", "", text)
    decimal = re.search(r"[.,](\d{1,2})$", digits)
    whole = re.sub(r"\D", "", digits[: decimal.start()] if decimal else digits)
    return f"{int(whole or 0)}.{decimal.group(1)}" if decimal else str(int(whole or 0))


def _date(groups: tuple[str | None, ...]) -> str | None:
    d1, m1, y1, y2, m2, d2, d3, mn3, y3, mn4, d4, y4 = groups
    try:
        if y1:
            day = dt.date(int(y1), int(m1), int(d1))
        elif y2:
            day = dt.date(int(y2), int(m2), int(d2))
        elif y3:
            day = dt.date(int(y3), MONTHS[mn3.lower()], int(d3))
        else:
            day = dt.date(int(y4), MONTHS[mn4.lower()], int(d4))
    except (ValueError, TypeError, KeyError):
        return None
    return day.isoformat()


def _normal(kind: str, match: re.Match[str]) -> str | None:
    if kind == "date":
        return _date(match.groups())
    if kind == "amount":
        currency, number = (match.group(1), match.group(2)) if match.group(1) else (match.group(4), match.group(3))
        return f"{_number(number)} {CURRENCIES[currency.lower()]}"
    if kind == "identifier":
        return match.group().upper()
    if kind == "number":
        return _number(match.group(1))
    if kind == "place" and match.group(1).split()[0].casefold() in NOT_PLACES:
        return None
    return " ".join(match.group(1).split()).casefold()  # product, person, place


@lru_cache(maxsize=4096)
def extract_facts(text: str) -> tuple[Fact, ...]:
    """The facts `text` states, left to right; each character belongs to at most one fact."""
    taken: list[tuple[int, int]] = []
    found: list[tuple[int, Fact]] = []

    def free(start: int, end: int) -> bool:
        return all(end <= a or start >= b for a, b in taken)

    for span in find_pii(text):
        digits = re.sub(r"[^0-9A-Za-z@.+]", "", text[span.start:span.end]).upper()
        taken.append((span.start, span.end))
        found.append((span.start, Fact(span.kind, text[span.start:span.end], digits)))
    for kind, pattern in PATTERNS:
        for match in pattern.finditer(text):
            group = 1 if kind in ("product", "person", "place") else 0
            start, end = match.start(group), match.end(group)
            if not free(start, end):
                continue
            value = _normal(kind, match)
            if value is not None:
                taken.append((start, end))
                found.append((start, Fact(kind, match.group(group), value)))
    return tuple(fact for _, fact in sorted(found, key=lambda item: item[0]))


def _values(text: str) -> set[tuple[str, str]]:
    return {(f.kind, f.value) for f in extract_facts(text)}


def _mentions(text: str, fact: Fact) -> bool:
    """Does `text` state this fact: as a fact of the same normal form, or (a name) as the same words?"""
    if (fact.kind, fact.value) in _values(text):
        return True
    if fact.kind in ("product", "person", "place"):  # a name stated without the cue the extractor needs
        return re.search(rf"(?<!\w){re.escape(fact.value)}(?!\w)", " ".join(text.split()).casefold()) is not None
    # numbers and ids are compared by normal form across kinds: "20" as a number or inside an amount
    return any(f.value == fact.value or f.value.split(" ")[0] == fact.value for f in extract_facts(text))


@dataclass
class FactScore:
    grounded: list[str]  # the reference's facts that appear in the input
    missed: list[str]  # grounded facts the answer does not state
    invented: list[str]  # the answer's facts that are neither in the input nor in the reference
    recall: float | None  # share of grounded facts stated; None: the reference has none

    def to_dict(self) -> dict[str, Any]:
        return {"grounded": self.grounded, "missed": self.missed, "invented": self.invented, "recall": self.recall}


def score_facts(answer: str, reference: str, inputs: str) -> FactScore:
    """Fact recall of an answer against the reference's grounded facts, and the facts it invents."""
    grounded = [f for f in dict.fromkeys(extract_facts(reference)) if _mentions(inputs, f)]
    missed = [f for f in grounded if not _mentions(answer, f)]
    invented = [f for f in dict.fromkeys(extract_facts(answer)) if not _mentions(inputs, f)
                and not _mentions(reference, f)]
    recall = round(1 - len(missed) / len(grounded), 4) if grounded else None
    return FactScore(grounded=[f.text for f in grounded], missed=[f.text for f in missed],
                     invented=[f.text for f in invented], recall=recall)
