"""The fast chat pass: the chat pass's outputs, byte for byte, in fewer steps per record.

The reference (tasks/passes/chat.py) runs each stage's own function on every record: the strict
decoder, `normalize_example`, `check_example` (its token count too), `example_digests`,
`feature_row`. This pass writes the same files (examples, rejections with their reasons and
details, features, result.json; tests/unit/test_fast_pass.py holds the two to that on the
sample data, every bad input, synthetic and generated records) in fewer steps:

- a JSON line is decoded by orjson alone when the strict rules (ftflow/reading.py
  `strict_loads`) cannot change what it gives: no run of 19 digits (found by a byte
  translation, not a regex), nesting within max_record_depth, no repeated key (for a record
  in the common shape, below: no more key marks than keys, without writing it out again);
  any other line is decoded by the reference's `decode_record`;
- a record in the common shape (an example of `messages` alone, each message a `role` and a
  `content` string) is normalised, checked, counted and digested in one walk of its messages,
  and serialised once (the special-token look reads those bytes, as the reference's does);
- what is done to a content string (stripped, PII found or masked, tokens counted, case-folded
  for the digests) is remembered per distinct string for the shard, in a bounded memo: system
  prompts and canned answers repeat.

Every other record, and every record the walk finds the reference might reject (an unknown
role, empty content, no assistant turn, a possible special token, too many tokens), goes
through the reference's steps (`ChatPass.prepare_example`), so its rejection is the
reference's own.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from ftflow.encodings import get_encoding
from ftflow.reading import duplicate_key, key_marks
from tasks.budget import REPLY_PRIMING_TOKENS, TOKENS_PER_MESSAGE
from tasks.features import feature_row
from tasks.passes.chat import SHARD_SCHEMA, ChatPass, shard_items
from tasks.pii import scan_text
from tasks.readers import Candidate, ExtractOptions, Item, RecordRejected, Rejection
from tasks.readers.jsonl import Shape, decode_record, record_to_example
from tasks.shards.store import ShardFiles, ShardResult
from tasks.transform import collapsed_text, map_role, split_for

if TYPE_CHECKING:
    from tiktoken import Encoding

    from tasks.shards.plan import Shard

# Digits to 0, every other byte to 1: a run of 19 digits is then a run of 19 zero bytes.
_DIGITS_TO_ZERO = bytes(0 if 0x30 <= byte <= 0x39 else 1 for byte in range(256))
_NINETEEN_DIGITS = bytes(19)
# Distinct strings (and source roles) remembered per shard; the memo starts afresh when full.
MEMO_ENTRIES = 1 << 16
# The roles a message of the common shape may end with; any other is the reference's to reject.
TRAINED_ROLES = ("system", "user", "assistant")
COMMON_SHAPE_DEPTH = 3  # an object of an array of objects of strings


def has_long_digit_run(raw: bytes) -> bool:
    """Whether raw holds 19 digits in a row: what `LONG_NUMBER.search` (ftflow/jsonl.py) finds,
    by one byte translation and one substring search."""
    return _NINETEEN_DIGITS in raw.translate(_DIGITS_TO_ZERO)


def decode_fast(source: str, loc: str, raw: bytes, options: ExtractOptions,
                shape: Shape = record_to_example) -> Item:
    """`decode_record`'s item for one record's bytes, by orjson alone where the strict rules
    cannot change it.

    orjson accepts only valid UTF-8 and rejects what strict_loads rejects but long integers,
    nesting and repeated keys: a line that may hold one of those (19 digits in a row, more
    brackets than max_record_depth, a repeated key by `duplicate_key`) or that orjson or the
    shape refuse is decoded by the reference.
    """
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return decode_record(source, loc, raw, options, shape)
    if has_long_digit_run(raw):
        return decode_record(source, loc, raw, options, shape)
    keys = common_shape_keys(record)
    if keys is None or options.max_record_depth < COMMON_SHAPE_DEPTH:
        if (raw.count(b"[") + raw.count(b"{") > options.max_record_depth
                or duplicate_key(raw, record) is not None):
            return decode_record(source, loc, raw, options, shape)
    # In the common shape no key ends in a backslash: as many key marks as keys is none repeated
    # (`duplicate_key` finds none when the text has no more marks than the record written out).
    elif key_marks(raw) > keys and duplicate_key(raw, record) is not None:
        return decode_record(source, loc, raw, options, shape)
    try:
        return Candidate(source, loc, shape(record, options))
    except RecordRejected:
        return decode_record(source, loc, raw, options, shape)


def common_shape_keys(record: Any) -> int | None:
    """The number of keys of a record in the common shape (`messages` alone, each message a `role`
    and a `content` string; it nests COMMON_SHAPE_DEPTH deep); None for any other record."""
    messages = record.get("messages") if type(record) is dict and len(record) == 1 else None
    if type(messages) is not list:
        return None
    for message in messages:
        if (type(message) is not dict or len(message) != 2 or type(message.get("role")) is not str
                or type(message.get("content")) is not str):
            return None
    return 1 + 2 * len(messages)


# How a canonical message ends in the digests, by role (sort_keys JSON: `content` before `role`).
CANONICAL_ROLE = {role: b',"role":"' + role.encode() + b'"}' for role in TRAINED_ROLES}
# Where the system prompt is put in, the message `apply_system_prompt` makes: role, then content.
PROMPT_TURN = {"role": "system", "content": ""}


class ExampleWalk:
    """The one walk of a record in the common shape, with the shard's memo of strings.

    `prepare` keeps a record exactly as the reference would, or does nothing and says so. The
    memo is plain dicts of strings, numbers and bytes: the garbage collector does not track
    such dicts, so a full memo costs its collections nothing (objects of their own per string
    made the fast pass spend about a tenth of its time in collections).
    """

    def __init__(self, record_pass: ChatPass, encoding: Encoding) -> None:
        transform = record_pass.transform
        self.role_map = transform.role_map
        self.pii_action, self.pii_regions = transform.pii, transform.pii_regions
        self.replace_system = transform.system_prompt_mode == "replace"
        self.prompt = transform.system_prompt  # put in as given: not stripped nor scanned
        self.encode = encoding.encode_ordinary
        self.limit = record_pass.training_context
        self.validation_fraction = record_pass.validation_fraction
        self.roles: dict[str, str] = {}  # source role -> role
        self.finals: dict[str, str] = {}  # source content -> the text kept (stripped, PII masked as the run says)
        self.found: dict[str, tuple[tuple[str, int], ...]] = {}  # source content -> the PII in it, where any
        self.tokens: dict[str, int] = {}  # text kept -> its tokens
        self.canonical: dict[str, bytes] = {}  # text kept -> its message's start in the digests
        self.counts: Counter[str] = Counter()  # what scanning one string found, cleared after each
        self.role_tokens = {role: len(self.encode(role)) for role in TRAINED_ROLES}
        self.lookups = self.misses = 0
        self.kept = 0  # records the walk kept (the rest went through the reference's steps)

    @property
    def hit_rate(self) -> float:
        """The share of content strings found in the memo."""
        return 1 - self.misses / self.lookups if self.lookups else 0.0

    def _final(self, content: str) -> str:
        """A content string not in the memo: stripped and scanned for PII as `normalize_example` does."""
        self.misses += 1
        final = content.strip()
        if self.pii_action != "off":
            counts = self.counts
            final = scan_text(final, self.pii_action, counts, self.pii_regions)
            if counts:
                self.found[content] = tuple(counts.items())
                counts.clear()
        self.finals[content] = final
        return final

    def _role(self, role: str) -> str:
        """A source role not in the memo, mapped."""
        if len(self.roles) >= MEMO_ENTRIES:
            self.roles.clear()
        mapped = self.roles[role] = map_role(role, self.role_map)
        return mapped

    def prepare(self, item: Candidate, ordinal: int, files: ShardFiles, pii: Counter[str]) -> bool:
        """Keep the record as the reference would and return True; or, when it is not in the common
        shape or the reference might reject it, do nothing and return False."""
        example = item.example
        if type(example) is not dict or len(example) != 1:
            return False
        messages = example.get("messages")
        if type(messages) is not list or not messages:
            return False
        if len(self.finals) >= MEMO_ENTRIES:  # between records: what one record found stays until it is kept
            for memo in (self.finals, self.found, self.tokens, self.canonical):
                memo.clear()
        known_roles, finals = self.roles, self.finals
        roles: list[str] = []
        contents: list[str] = []
        texts: list[str] = []
        for message in messages:
            if type(message) is not dict or len(message) != 2:
                return False
            role, content = message.get("role"), message.get("content")
            if type(role) is not str or type(content) is not str:
                return False
            roles.append(known_roles.get(role) or self._role(role))
            contents.append(content)
            # Every turn's text, trimmed ones too: the reference counts their PII.
            texts.append(text if (text := finals.get(content)) is not None else self._final(content))
        self.lookups += len(texts)
        if "assistant" not in roles:
            return False
        kept = len(roles) - roles[::-1].index("assistant")  # turns up to the last assistant one
        trimmed = len(roles) - kept
        turns = messages[:kept] if trimmed else messages  # the source messages: their key order is kept
        kept_roles, kept_texts = (roles[:kept], texts[:kept]) if trimmed else (roles, texts)
        if any(map(str.__eq__, kept_roles[1:], kept_roles)):  # turns of one role in a row are merged
            turns, kept_roles, kept_texts = _merged(turns, kept_roles, kept_texts)
        merged = kept - len(kept_roles)
        if self.prompt is not None and (self.replace_system or "system" not in kept_roles):
            others = [i for i, role in enumerate(kept_roles) if role != "system"]
            turns = [PROMPT_TURN, *(turns[i] for i in others)]
            kept_roles = ["system", *(kept_roles[i] for i in others)]
            kept_texts = [self.prompt, *(kept_texts[i] for i in others)]
        # Check and count (what the reference would reject goes back to it); serialise; digest.
        role_tokens, known_tokens, known_canonical = self.role_tokens, self.tokens, self.canonical
        tokens = REPLY_PRIMING_TOKENS + TOKENS_PER_MESSAGE * len(kept_roles)
        assistant_tokens = 0
        out: list[dict[str, str]] = []
        canonical: list[bytes] = []
        conversation: list[bytes] = []
        for turn, role, text in zip(turns, kept_roles, kept_texts, strict=True):
            count = role_tokens.get(role)
            if count is None or not text.strip():
                return False
            if (n := known_tokens.get(text)) is None:
                n = known_tokens[text] = len(self.encode(text))
            tokens += count + n
            if role == "assistant":
                assistant_tokens += n
            # The source message where nothing changed; else a copy in its key order, as the reference makes.
            out.append(turn if turn["content"] is text and turn["role"] == role
                       else {**turn, "role": role, "content": text})
            if (start := known_canonical.get(text)) is None:
                start = known_canonical[text] = b'{"content":' + orjson.dumps(collapsed_text(text))
            digested = start + CANONICAL_ROLE[role]
            canonical.append(digested)
            if role != "system":
                conversation.append(digested)
        if tokens > self.limit:
            return False
        normalised = {"messages": out}
        line = orjson.dumps(normalised) + b"\n"
        if b"<|" in line:  # the reference's look for special tokens starts so too
            return False
        found = 0
        if self.found:
            for content in contents:
                for kind, count in self.found.get(content, ()):
                    pii[kind] += count
                    found += count
        result = files.result
        result.trimmed_turns += trimmed
        result.merged_turns += merged
        row = feature_row(normalised, source=item.source, loc=item.loc,
                          split=split_for(_digest(conversation), self.validation_fraction), tokens=tokens,
                          assistant_tokens=assistant_tokens, pii=found, content_sha256=_digest(canonical))
        files.keep_line(line, row, ordinal)
        self.kept += 1
        return True


def _merged(turns: list[dict[str, str]], roles: list[str], texts: list[str]
            ) -> tuple[list[dict[str, str]], list[str], list[str]]:
    """Turns of one role in a row as one, their texts joined by a newline (`normalize_example`)."""
    merged_turns: list[dict[str, str]] = []
    merged_roles: list[str] = []
    merged_texts: list[str] = []
    for turn, role, text in zip(turns, roles, texts, strict=True):
        if merged_roles and merged_roles[-1] == role:
            merged_texts[-1] += "\n" + text
        else:
            merged_turns.append(turn)
            merged_roles.append(role)
            merged_texts.append(text)
    return merged_turns, merged_roles, merged_texts


def _digest(messages: list[bytes]) -> str:
    """`example_digests`'s sha256 of canonical messages (each as sort_keys JSON) and no tools."""
    return hashlib.sha256(b'{"messages":[' + b",".join(messages) + b'],"tools":null}').hexdigest()


@dataclass(frozen=True)
class FastChatPass(ChatPass):
    """The chat pass, its outputs byte for byte, in fewer steps per record (the module says how)."""

    code: ClassVar[tuple[str, ...]] = (*ChatPass.code, "passes/fast_chat.py")
    outputs_code: ClassVar[tuple[str, ...] | None] = ChatPass.code

    def write(self, shard: Shard, directory: Path) -> ShardResult:
        return self.write_measured(shard, directory)[0]

    def write_measured(self, shard: Shard, directory: Path) -> tuple[ShardResult, ExampleWalk]:
        """`write`, and its walk: how often the memo of strings was hit (bench/record_pass.py)."""
        encoding = get_encoding(self.encoding)
        walk = ExampleWalk(self, encoding)
        result = ShardResult(shard.name, shard.index, str(directory))
        pii: Counter[str] = Counter()
        with ShardFiles(result, directory, SHARD_SCHEMA) as files:
            for ordinal, item in enumerate(shard_items(shard, self.extract, decode_fast)):
                result.records_read += 1
                if isinstance(item, Rejection):
                    files.reject("extract", **item.to_dict())
                elif not walk.prepare(item, ordinal, files, pii):
                    self.prepare_example(item, ordinal, files, pii, encoding)
        return files.finish(pii), walk
