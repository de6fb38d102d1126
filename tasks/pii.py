"""PII: find and mask e-mail addresses, phone numbers, IBANs, card numbers and IP addresses.

Each string gets one pass of one candidate regex. Which alternatives that regex holds depends
on cheap prefilters (`@` for e-mail, `:` for IPv6, a digit for the rest), so plain text costs
a couple of `str`/`re` look-ups and nothing else. Every candidate is then validated by a
library or a rule that knows the format:

- phone: `phonenumbers` in the configured regions (`pii_regions`);
- IBAN: `python-stdnum` (check digits and the country's BBAN structure), grouped with spaces
  or dashes, any case;
- credit card: Luhn, issuer ranges, and card context words or a card-shaped grouping; a bare
  15- or 16-digit number in a major issuer's range (Visa, Mastercard, Amex, Discover, JCB)
  that passes Luhn is a card without either. Order and tracking numbers that happen to pass
  Luhn are not cards when an identifier word precedes them;
- IP: `ipaddress`, IPv4 and IPv6.

Numbers right after words such as "Kundennummer", "Auftrag" or "Sendung" are identifiers, not
phones or cards, unless a nearer word says otherwise ("Rückruf an ...", "Karte ...").

JSON strings (answers, tool-call arguments) are parsed and masked inside their string values,
then re-serialised, so masking never breaks them; numbers in JSON are not scanned.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any, Literal

import phonenumbers
from stdnum import iban as stdnum_iban

from ftflow.settings import default

PII_TYPES = ("email", "phone", "iban", "credit_card", "ip")
DEFAULT_REGIONS: tuple[str, ...] = default("pii_regions")
PiiAction = Literal["report", "mask"]


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    kind: str


# --- candidates ---------------------------------------------------------------------------

_SEP = r"(?:[ \u00a0]?[-./][ \u00a0]?|[ \u00a0]?\((?=\d)|\)[ \u00a0]?|[ \u00a0])"
_ALTERNATIVES = {  # the order is the priority at one start position
    "email": r"(?<![\w.%+'-])[\w%+'-](?:[\w.%+'-]*[\w%+'-])?@(?:[^\W_](?:[\w-]*[^\W_])?\.)+[^\W\d_]{2,}(?![\w-])",
    "ip6": r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{1,4})?(?![\w:])",
    "ip4": r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)",
    "iban": r"(?<!\w)[A-Za-z]{2}\d{2}(?:[ -]?[A-Za-z0-9]{4}){2,7}(?:[ -]?[A-Za-z0-9]{1,3})?(?![A-Za-z0-9])",
    # 7+ digits with phone/card separators; a leading "+" or "(" belongs to the number.
    "number": rf"(?<![\w+])(?<!\d[.,])(?<!\w[-/])(?:\+|\((?=\d))?\d(?:{_SEP}?\d){{6,}}(?![-/]?\w)",
}
# Prefilters: each finds a part that every match of its alternative contains, with the fewest
# digits such a part holds (text with fewer skips the scan). All but ip6 start with a digit,
# so their scan starts at the text's first digit; ip6's starts with a literal `re` skips to.
_HINTS: dict[str, tuple[re.Pattern[str], int]] = {
    "ip6": (re.compile(r":[0-9A-Fa-f]{0,4}:"), 0),
    "ip4": (re.compile(r"\d\.\d{1,3}\.\d{1,3}\.\d"), 4),
    "iban": (re.compile(r"\d(?<=[A-Za-z]{2}\d)\d(?:[ -]?[A-Za-z0-9]{4}){2}"), 2),
    "number": (re.compile(r"\d(?:\W{0,3}\d){6}"), 7),
}
_DIGIT = re.compile(r"\d")
_DIGITS_TO_NUL = bytes.maketrans(b"0123456789", bytes(10))


def _digits(text: str) -> tuple[int, int]:
    """(at least as many as the digits in `text`, at most the index of its first digit).

    Most text is Latin-1, where only 0-9 are digits and a character is a byte: there, digits
    are mapped to NUL and counted and found by C byte operations (a regex steps through the
    text one character at a time). Other text is scanned with `\\d`, which also matches other
    scripts' digits, as the candidate regexes do.
    """
    try:
        marked = text.encode("latin-1").translate(_DIGITS_TO_NUL)
    except UnicodeEncodeError:
        return len(_DIGIT.findall(text)), 0
    return marked.count(0), max(marked.find(0), 0)


def _candidate_regex(text: str) -> re.Pattern[str] | None:
    """The one candidate regex for `text`: only the alternatives whose prefilter fires."""
    digits, first = _digits(text)
    if not digits:
        return _compiled(("email",)) if "@" in text else None
    names = tuple(
        name for name in _ALTERNATIVES if ("@" in text if name == "email" else _hint(name, text, digits, first))
    )
    return _compiled(names) if names else None


def _hint(name: str, text: str, digits: int, first_digit: int) -> bool:
    hint, min_digits = _HINTS[name]
    return digits >= min_digits and hint.search(text, 0 if name == "ip6" else first_digit) is not None


@cache
def _compiled(names: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?P<{name}>{_ALTERNATIVES[name]})" for name in names))


# --- context words ------------------------------------------------------------------------

# Identifiers: a number right after one of these is not a phone or a card.
_ID_WORDS = re.compile(
    r"kunden(?:nummer|-?nr|-?id|konto)|kd\.?-?nr|customer (?:id|no|number|#)|client id|auftrag|order|bestell"
    r"|rechnung|invoice|beleg|receipt|sendung|tracking|track|paket|parcel|shipment|lieferschein|ticket|vorgang"
    r"|vertrag|contract|artikel|art\.-?nr|sku|serien|serial|s/n|referenz|reference|ref\.|aktenzeichen|\baz\b"
    r"|mitglied|member|gutschein|voucher|coupon|transaktion|transaction|fahrgestell|\bvin\b|\bean\b|\bisbn\b"
    r"|\bplz\b|\bzip\b|postcode|version|firmware|build|release|kapitel|chapter|abschnitt|section|modell|\bid\b"
    r"|konto(?:nummer|-?nr)|\bkonto\b|bankleitzahl|\bblz\b|account (?:no|number|#)"
)
# Labels that make any number an identifier ("Rahmen-Nr.", "Gewinnspielcode"), unless they
# carry a positive word themselves ("Telefonnummer", "Tel.-Nr.", "Kartennummer").
_ID_LABELS = re.compile(r"[a-zäöüß]{3,}-?(?:nr|nummer|code|id)\b|\bnr\b")
_PHONE_WORDS = re.compile(
    r"tel\b|telefon|phone|call|ruf|handy|mobil|fax|erreich|reach|kontakt|contact|whatsapp|festnetz|hotline"
    r"|durchwahl|zentrale|service(?:nummer|-?nr)"
)
_CARD_WORDS = re.compile(
    r"karte|card|\bcc\b|visa|master|amex|american express|kredit|credit|debit|maestro|discover|jcb|diners|zahlung"
    r"|payment|bezahl|paid|pay\b|belast|\bcharged?\b|cvc|cvv|gültig bis|\bexp\b"
)
# Dotted numbers after these are versions or sections, not IPv4 addresses.
_VERSION_WORDS = re.compile(
    r"version|firmware|build|release|update|kapitel|chapter|abschnitt|section|paragraph|§|\bv\b|\bnr\b"
)
_IP_WORDS = re.compile(r"\bip|adress|address|host|server|router|gateway|dns|ping|login|zugriff|access|client")
_CONTEXT_CHARS = 40


def _last_end(words: re.Pattern[str], window: str) -> int:
    return max((m.end() for m in words.finditer(window)), default=-1)


def _is_identifier(before: str, positive: re.Pattern[str]) -> bool:
    """True when an identifier word or label is nearer to the number than any `positive` word."""
    window = before[-_CONTEXT_CHARS:].lower()
    last_id = _last_end(_ID_WORDS, window)
    for label in _ID_LABELS.finditer(window):
        if not positive.search(window, max(0, label.start() - 8), label.end()):
            last_id = max(last_id, label.end())
    return last_id > _last_end(positive, window)


def _is_version(before: str) -> bool:
    window = before[-_CONTEXT_CHARS:].lower()
    return _last_end(_VERSION_WORDS, window) > _last_end(_IP_WORDS, window)


def _has_word(before: str, words: re.Pattern[str]) -> bool:
    return words.search(before[-_CONTEXT_CHARS:].lower()) is not None


# --- validators ---------------------------------------------------------------------------

_IMAGE_SUFFIXES = {"png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "tif", "tiff", "pdf"}


def _email_ok(candidate: str) -> bool:
    local, _, domain = candidate.rpartition("@")
    tld = domain.rsplit(".", 1)[-1].lower()
    return ".." not in local and tld not in _IMAGE_SUFFIXES  # `icon@2x.png` is a file name


def _ip_ok(candidate: str, before: str) -> bool:
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return False
    if address.version == 6:  # "::" alone or `std::` are code, not addresses
        return any(c.isdigit() for c in candidate)
    return not _is_version(before)  # `Version 1.2.3.4`


@lru_cache(maxsize=4096)
def _iban_length(candidate: str) -> int:
    """Length of the longest prefix (whole groups) that is a valid IBAN, or 0."""
    groups = re.split(r"([ -])", candidate)
    for end in range(len(groups), 0, -2):
        prefix = "".join(groups[:end])
        # Country modules also look banks up in a registry that goes stale; check digits and
        # the BBAN structure are what make it an IBAN.
        if stdnum_iban.is_valid(prefix.replace("-", ""), check_country=False):
            return len(prefix)
    return 0


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


# (first digits from, to, lengths): Visa, Mastercard, Amex, Discover, Diners, JCB, UnionPay, Maestro.
_ISSUERS = [
    ("4", "4", range(13, 20)),
    ("51", "55", (16,)),
    ("2221", "2720", (16,)),
    ("34", "34", (15,)),
    ("37", "37", (15,)),
    ("6011", "6011", range(16, 20)),
    ("644", "649", range(16, 20)),
    ("65", "65", range(16, 20)),
    ("300", "305", range(14, 20)),
    ("36", "36", range(14, 20)),
    ("38", "39", range(16, 20)),
    ("3528", "3589", range(16, 20)),
    ("62", "62", range(16, 20)),
    ("5018", "5018", range(12, 20)),
    ("5020", "5020", range(12, 20)),
    ("5038", "5038", range(12, 20)),
    ("5893", "5893", range(12, 20)),
    ("6304", "6304", range(12, 20)),
    ("6759", "6759", range(12, 20)),
    ("6761", "6763", range(12, 20)),
]
# Card numbers as printed on cards: 4-4-4-4(-3), Amex/Diners 4-6-5 and 4-6-4.
_CARD_GROUPING = re.compile(r"\d{4}([ -])\d{4}\1\d{4}\1\d{4}(?:\1\d{3})?|\d{4}([ -])\d{6}\2\d{4,5}")


# The major issuers' 15- and 16-digit ranges (Amex 15; Visa, Mastercard, Discover, JCB 16):
# a Luhn-valid number there is a card even with no card word or grouping (1 in 10 random
# numbers passes Luhn, and only these prefixes count, so a bare tracking number rarely does).
_MAJOR_ISSUERS = [
    ("4", "4", (16,)),
    ("51", "55", (16,)),
    ("2221", "2720", (16,)),
    ("34", "34", (15,)),
    ("37", "37", (15,)),
    ("6011", "6011", (16,)),
    ("644", "649", (16,)),
    ("65", "65", (16,)),
    ("3528", "3589", (16,)),
]


def _issuer_ok(digits: str, issuers: list[tuple[str, str, Any]] = _ISSUERS) -> bool:
    return any(low <= digits[: len(low)] <= high and len(digits) in lengths for low, high, lengths in issuers)


def _card_ok(candidate: str, digits: str, before: str) -> bool:
    if not (12 <= len(digits) <= 19) or not re.fullmatch(r"[\d -]+", candidate):
        return False
    if not (_luhn_ok(digits) and _issuer_ok(digits)) or _is_identifier(before, _CARD_WORDS):
        return False
    return (
        _has_word(before, _CARD_WORDS)
        or _CARD_GROUPING.fullmatch(candidate) is not None
        or _issuer_ok(digits, _MAJOR_ISSUERS)
    )


_DATE = re.compile(r"(?<!\d)(\d{1,2})([./-])(\d{1,2})\2(\d{4}|\d{2})(?!\d)|(?<!\d)\d{4}-\d{2}-\d{2}(?!\d)")
_NANP = re.compile(r"(?:\+?1[ .-]?)?(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}")


def _looks_like_date(candidate: str) -> bool:
    for m in _DATE.finditer(candidate):
        if m.group(1) is None or (1 <= int(m.group(1)) <= 31 and 1 <= int(m.group(3)) <= 12):
            return True
    return False


@lru_cache(maxsize=65536)
def _phone_ok(candidate: str, regions: tuple[str, ...]) -> bool:
    """Phone if the shape is one people write and `phonenumbers` accepts it in a region.

    International (+, 00) and North American (3-3-4) shapes with separators only need a
    possible length: the shape is evidence already, and fictional ranges (555, Ofcom's drama
    numbers) are still personal in a chat. A national number (leading 0) must be valid in one
    of the regions.
    """
    digits = re.sub(r"\D", "", candidate)
    if not 7 <= len(digits) <= 17 or _looks_like_date(candidate):
        return False
    # Written without any separator, a long number is as likely an order or tracking number:
    # it has to be a valid number, and a national one at most 12 digits (0176 12345678).
    compact = candidate.lstrip("+").isdigit()
    try:
        if candidate.startswith("+") or (digits.startswith("00") and not digits.startswith("000")):
            number = phonenumbers.parse("+" + digits[2:] if not candidate.startswith("+") else candidate, None)
            return (phonenumbers.is_valid_number if compact else phonenumbers.is_possible_number)(number)
        if compact and len(digits) > 12:
            return False
        if "US" in regions and _NANP.fullmatch(candidate):
            return phonenumbers.is_possible_number(phonenumbers.parse(candidate, "US"))
        if digits.startswith("0"):
            return any(phonenumbers.is_valid_number(phonenumbers.parse(candidate, r)) for r in regions)
    except phonenumbers.NumberParseException:
        return False
    return False


def _number_spans(run: str, before: str, regions: tuple[str, ...]) -> list[tuple[int, int, str]]:
    """Return (start, end, kind) within a digit run: a card, or phones, or nothing."""
    if run.startswith("(") and run.count("(") > run.count(")"):
        return [(start + 1, end + 1, kind) for start, end, kind in _number_spans(run[1:], before, regions)]
    digits = re.sub(r"\D", "", run)
    if _card_ok(run, digits, before):
        return [(0, len(run), "credit_card")]
    if _is_identifier(before, _PHONE_WORDS):
        return []
    if _phone_ok(run, regions):
        return [(0, len(run), "phone")]
    spans = []
    # Alternatives ("0512 123456 / 0660 1234567"), and a phone followed by an unrelated number
    # ("0660 1234567 2 Stück"): each piece whole, else without its last group.
    offset = 0
    for piece in re.split(r"( [-/] )", run):
        shorter = re.match(rf"(.*\d){_SEP}\d+$", piece)
        for phone in (piece, shorter.group(1) if shorter else None):
            if phone and _phone_ok(phone, regions):
                spans.append((offset, offset + len(phone), "phone"))
                break
        offset += len(piece)
    return spans


# --- finding and masking ------------------------------------------------------------------


def find_pii(text: str, regions: Iterable[str] = DEFAULT_REGIONS, context: str = "") -> list[Span]:
    """Return the PII spans in `text`, left to right. `context` is text that precedes it (a JSON key)."""
    return _find(text, _candidate_regex(text), tuple(regions), context)


def _find(text: str, regex: re.Pattern[str] | None, regions: tuple[str, ...], context: str) -> list[Span]:
    if regex is None:
        return []
    spans: list[Span] = []
    for m in regex.finditer(text):
        name, candidate, start = m.lastgroup, m.group(), m.start()
        before = text[max(0, start - _CONTEXT_CHARS) : start]
        if context:
            before = f"{context} {before}"
        if name == "email":
            if _email_ok(candidate):
                spans.append(Span(start, m.end(), "email"))
        elif name in ("ip4", "ip6"):
            if _ip_ok(candidate, before):
                spans.append(Span(start, m.end(), "ip"))
        elif name == "iban":
            length = _iban_length(candidate)
            if length:
                spans.append(Span(start, start + length, "iban"))
        else:
            spans += [Span(start + a, start + b, kind) for a, b, kind in _number_spans(candidate, before, regions)]
    return spans


def mask_token(kind: str, *, bare: bool = False) -> str:
    """`[PHONE]` in text; `PHONE` where brackets are not allowed (message and function names)."""
    return kind.upper() if bare else f"[{kind.upper()}]"


def _apply(text: str, spans: list[Span], bare: bool) -> str:
    out, last = [], 0
    for span in spans:
        out += [text[last : span.start], mask_token(span.kind, bare=bare)]
        last = span.end
    return "".join(out) + text[last:]


def scan_text(
    text: str,
    action: PiiAction,
    counts: Counter[str],
    regions: tuple[str, ...] = DEFAULT_REGIONS,
    *,
    bare: bool = False,
) -> str:
    """Count the PII in `text` into `counts`; return it masked (action mask) or unchanged.

    A string that is a JSON object or array is scanned value by value and re-serialised only
    if something was masked, so a JSON answer stays valid JSON.
    """
    regex = _candidate_regex(text)
    if regex is None and "\\" not in text:
        return text
    is_json = text.lstrip()[:1] in ("{", "[")
    if regex is None and not is_json:  # in JSON, escapes can hide PII from the prefilters
        return text
    if is_json:
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict | list):
            found_before = sum(counts.values())
            masked = _scan_json(data, counts, regions, "")
            changed = action == "mask" and sum(counts.values()) > found_before
            return _dumps_like(text, masked) if changed else text
    spans = _find(text, regex, regions, "")
    counts.update(span.kind for span in spans)
    return _apply(text, spans, bare) if action == "mask" and spans else text


_FIRST_KEY_SEPARATOR = re.compile(r'^\s*\{\s*"(?:[^"\\]|\\.)*"(\s*:\s*)')


def _dumps_like(original: str, value: Any) -> str:
    """Serialise the masked value in the original's style (compact or not, \\u escapes or not),
    so masked answers look like the unmasked ones the model also learns from."""
    first = _FIRST_KEY_SEPARATOR.match(original)
    separators = (",", ":") if first and first.group(1) == ":" else None
    return json.dumps(value, ensure_ascii="\\u" in original, separators=separators)


def _scan_json(value: Any, counts: Counter[str], regions: tuple[str, ...], key: str) -> Any:
    if isinstance(value, str):
        spans = find_pii(value, regions, context=key)
        counts.update(span.kind for span in spans)
        return _apply(value, spans, False) if spans else value
    if isinstance(value, dict):
        return {k: _scan_json(v, counts, regions, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_scan_json(v, counts, regions, key) for v in value]
    return value


def scan_message(
    message: dict[str, Any], action: PiiAction, regions: tuple[str, ...] = DEFAULT_REGIONS,
    counts: Counter[str] | None = None,
) -> tuple[dict[str, Any], Counter[str]]:
    """Scan every string of a chat message the model trains on; return it (masked) and counts.

    That is `content` (a string or text parts), `name`, and each tool call's function name and
    arguments. Other fields are left alone. Counts are added to `counts` when given (one
    counter for a whole example), else to a new one.
    """
    if counts is None:
        counts = Counter()
    out = dict(message)
    content = out.get("content")
    if isinstance(content, str):
        out["content"] = scan_text(content, action, counts, regions)
    elif isinstance(content, list):
        out["content"] = [
            {**part, "text": scan_text(part["text"], action, counts, regions)}
            if isinstance(part, dict) and isinstance(part.get("text"), str)
            else part
            for part in content
        ]
    if isinstance(out.get("name"), str):
        out["name"] = scan_text(out["name"], action, counts, regions, bare=True)
    if isinstance(out.get("tool_calls"), list):
        out["tool_calls"] = [_scan_tool_call(call, action, counts, regions) for call in out["tool_calls"]]
    return (out if action == "mask" else message), counts


def _scan_tool_call(call: Any, action: PiiAction, counts: Counter[str], regions: tuple[str, ...]) -> Any:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict):
        return call
    function = dict(function)
    if isinstance(function.get("name"), str):
        function["name"] = scan_text(function["name"], action, counts, regions, bare=True)
    if isinstance(function.get("arguments"), str):
        function["arguments"] = scan_text(function["arguments"], action, counts, regions)
    return {**call, "function": function}
