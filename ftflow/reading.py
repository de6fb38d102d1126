"""Reading raw bytes without losing any: chunks and lines that report where a file failed, and a
scanner that finds where each JSON value ends without parsing it.

A file that is cut short (gzip without its end marker), corrupt or failing on the disk raises
ReadFault from these helpers, after every complete piece before the fault was handed out.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import orjson

from ftflow.jsonl import LONG_NUMBER, DecompressedTooLarge, dumps_exact

BOM = b"\xef\xbb\xbf"
READ_CHUNK = 1 << 20
QUOTE = ord('"')
OPENING = b"{["


class ReadFault(Exception):
    """The rest of a file cannot be read: compressed data cut short or corrupt, or an I/O error.

    `partial` holds the bytes of the incomplete record read before the fault.
    """

    def __init__(self, reason: str, detail: str, partial: bytes = b"") -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.partial = partial


def read_fault(exc: BaseException, partial: bytes = b"") -> ReadFault:
    """Classify an exception raised while reading a file."""
    if isinstance(exc, DecompressedTooLarge):
        return ReadFault("decompressed_too_large", f"{exc}, over max_decompressed_bytes", partial)
    if isinstance(exc, EOFError):
        return ReadFault("truncated_file", f"the compressed data ends early ({exc})", partial)
    if isinstance(exc, gzip.BadGzipFile | zlib.error):
        return ReadFault("corrupt_file", f"corrupt compressed data ({exc})", partial)
    if isinstance(exc, OSError):
        return ReadFault("read_error", f"read error ({exc.strerror or exc})", partial)
    return ReadFault("corrupt_file", f"unreadable data ({exc})", partial)


READ_ERRORS = (EOFError, OSError, zlib.error)


def read_chunks(f: IO[bytes], size: int | None = None) -> Iterator[bytes]:
    """The file's bytes in chunks; a read error raises ReadFault.

    `read1` makes one underlying read per call, so a gzip stream that is cut short gives up
    every byte decompressed before the cut.
    """
    read = getattr(f, "read1", f.read)
    size = size or READ_CHUNK
    while True:
        try:
            chunk = read(size)
        except READ_ERRORS as exc:
            raise read_fault(exc) from None
        if not chunk:
            return
        yield chunk


PREFIX_BYTES = 256  # what a rejection keeps of a record over the maximum length


@dataclass(frozen=True)
class TooLong:
    """A line longer than the maximum record length: its first bytes and its size (with its `\\n`)."""

    prefix: bytes
    size: int

    def __len__(self) -> int:
        return self.size


def read_lines(f: IO[bytes], max_bytes: int | None = None) -> Iterator[bytes | TooLong]:
    """The file's lines (with their `\\n`); ReadFault carries the incomplete line before a fault.

    Linear in the file's size. A line over max_bytes is handed out as TooLong, read past
    without being held: at most max_bytes plus a chunk of it is ever in memory.
    """
    pending: list[bytes] = []  # the pieces of a line that spans chunks
    pending_size = 0
    long: TooLong | None = None  # the line over max_bytes being read past
    limit = max_bytes or float("inf")
    try:
        for chunk in read_chunks(f):
            lines = chunk.split(b"\n")
            rest = lines.pop()
            if lines:  # the first line ends in this chunk
                first = lines[0]
                if long is not None:
                    lines[0] = TooLong(long.prefix, long.size + len(first) + 1)  # type: ignore[call-overload]
                elif pending:
                    pending.append(first)
                    lines[0] = b"".join(pending)
                pending, pending_size, long = [], 0, None
                for line in lines:
                    if isinstance(line, TooLong):
                        yield line
                    elif len(line) > limit:
                        yield TooLong(line[:PREFIX_BYTES], len(line) + 1)
                    else:
                        yield line + b"\n"
            if not rest:
                continue
            if long is not None:
                long = TooLong(long.prefix, long.size + len(rest))
                continue
            pending.append(rest)
            pending_size += len(rest)
            if pending_size > limit:
                head = b"".join(pending[:PREFIX_BYTES])[:PREFIX_BYTES]  # each piece holds a byte at least
                long, pending, pending_size = TooLong(head, pending_size), [], 0
    except ReadFault as fault:
        fault.partial = long.prefix if long is not None else b"".join(pending)
        raise
    if long is not None:
        yield long
    elif pending:
        line = b"".join(pending)
        yield line if len(line) <= limit else TooLong(line[:PREFIX_BYTES], len(line))


class JsonScanner:
    """Finds where top-level JSON values begin and end in a byte stream, without parsing them.

    Only strings and brackets matter for that, so whole records are handed to orjson, the
    same parser JSON Lines use: the same reasons, lone surrogates and repeated keys included.
    """

    OBJECT_END = re.compile(rb"\}(?=\s*[,\]])")
    BETWEEN_BRACKETS = re.compile(rb'(?:[^"\[\]{}]+|"[^"\\]*(?:\\.[^"\\]*)*")*', re.S)
    STRING_REST = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*"', re.S)  # after the opening quote
    SCALAR_END = re.compile(rb"[\s,\]}]")
    SPACE = re.compile(rb"\s*")

    class Truncated(Exception):
        """The data ends inside a value."""

    def __init__(self, f: IO[bytes]) -> None:
        self._chunks = read_chunks(f)
        self.buf = b""
        self.pos = 0
        self.eof = False
        self._lines = (0, 1)  # (position, line number there), counted lazily
        self._more()
        if self.buf.startswith(BOM):
            self.pos, self._lines = len(BOM), (len(BOM), 1)

    def _more(self) -> bool:
        if self.eof:
            return False
        chunk = next(self._chunks, b"")
        self.eof = not chunk
        self.buf += chunk
        return bool(chunk)

    def compact(self) -> None:
        """Forget what was consumed (only between values: positions of earlier values go stale)."""
        if self.pos > READ_CHUNK:
            line = self.line()
            self.buf, self.pos, self._lines = self.buf[self.pos :], 0, (0, line)

    def line(self) -> int:
        """The line number of the current position."""
        counted, line = self._lines
        line += self.buf.count(b"\n", counted, self.pos)
        self._lines = (self.pos, line)
        return line

    def peek(self) -> bytes:
        """The next non-whitespace byte (whitespace is consumed), or b"" at the end."""
        while True:
            self.pos = self.SPACE.match(self.buf, self.pos).end()
            if self.pos < len(self.buf):
                return self.buf[self.pos : self.pos + 1]
            if not self._more():
                return b""

    def expect(self, byte: bytes) -> bool:
        if self.peek() == byte:
            self.pos += 1
            return True
        return False

    def value(self) -> bytes:
        """The bytes of the next value; raises Truncated when the data ends inside it."""
        first = self.peek()
        start = self.pos
        if first == b"{" and (end := self._object_end_by_parsing(start)):
            self.pos = end
            return self.buf[start:end]
        if first in (b"{", b"["):
            depth = 0
            while True:
                # Jump over everything but brackets, strings included, in one match.
                self.pos = self.BETWEEN_BRACKETS.match(self.buf, self.pos).end()
                if self.pos == len(self.buf) or self.buf[self.pos] == QUOTE:  # the data ends, maybe in a string
                    if not self._more():
                        raise self.Truncated
                    continue
                depth += 1 if self.buf[self.pos] in OPENING else -1
                self.pos += 1
                if depth == 0:
                    return self.buf[start : self.pos]
        if first == b'"':
            self.pos += 1
            self._string_rest()
            return self.buf[start : self.pos]
        while (match := self.SCALAR_END.search(self.buf, self.pos)) is None and self._more():
            pass
        self.pos = match.start() if match else len(self.buf)
        return self.buf[start : self.pos]

    def _object_end_by_parsing(self, start: int, attempts: int = 4) -> int | None:
        """Where the object at start ends, found fast: the first `}` before `,` or `]` up to which it parses.

        A shorter prefix cannot parse (it would leave a string or bracket open), so the first
        one that does is the whole object. Only prefixes whose brackets balance (strings
        counted too, which rarely matters) are parsed. None (then brackets are counted one by
        one) for a broken object.
        """
        balance, counted = 0, start
        for candidates, match in enumerate(self.OBJECT_END.finditer(self.buf, start)):
            if candidates > 64:  # e.g. a `}` inside a string keeps the count off: count brackets instead
                return None
            end = match.end()
            buf = self.buf
            balance += (buf.count(b"{", counted, end) + buf.count(b"[", counted, end)
                        - buf.count(b"}", counted, end) - buf.count(b"]", counted, end))
            counted = end
            if balance:
                continue
            try:
                orjson.loads(buf[start:end])
            except orjson.JSONDecodeError:
                attempts -= 1
                if not attempts:
                    return None
                continue
            return end
        return None

    def _string_rest(self) -> None:
        while (match := self.STRING_REST.match(self.buf, self.pos)) is None:
            if not self._more():
                raise self.Truncated
        self.pos = match.end()

    def rest(self) -> bytes:
        return self.buf[self.pos :]


class JsonRejected(Exception):
    """A JSON text that strict_loads refuses: `reason` is a rejection reason (docs/rejections.md)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def key_marks(text: bytes) -> int:
    """Roughly the keys in a JSON text: quotes followed by a colon, less escaped quotes followed by one.

    Of compact JSON (as `dumps_exact` writes it) it is at least the number of keys that do not end
    in a backslash: each is followed by `":` with no backslash before it, and what strings hold
    adds to the count or nets to nothing (an escaped quote before a colon is counted and taken off).
    """
    return text.count(b'":') + text.count(b'" :') - text.count(b'\\":')


def duplicate_key(raw: bytes, record: Any) -> str | None:
    """The first key that appears twice in one object of the JSON text, or None.

    orjson keeps the last value of a repeated key without a word. Counted the same rough way,
    the text has more keys than the parsed record written back out only if a key repeats (or
    in rare spellings); only then is the text parsed again with a hook that sees every pair.
    """
    if key_marks(raw) <= key_marks(dumps_exact(record)):
        return None
    repeated: list[str] = []

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen and not repeated:
                repeated.append(key)
            seen.add(key)
        return dict(pairs)

    json.loads(raw, object_pairs_hook=pairs_hook)
    return repeated[0] if repeated else None


def too_deep(value: Any, max_depth: int) -> bool:
    """Whether arrays and objects nest more than max_depth levels in value (counted without recursion)."""
    containers = (list, dict)
    level = [value] if isinstance(value, containers) else []  # the arrays and objects one level down
    for _ in range(max_depth):
        if not level:
            return False
        level = [v for c in level for v in (c.values() if isinstance(c, dict) else c) if isinstance(v, containers)]
    return bool(level)


def strict_loads(raw: bytes | str, max_depth: int) -> Any:
    """One JSON value by the rule every record and every tool call's `arguments` follow.

    Strict JSON as orjson reads it (no NaN or Infinity, no number that overflows a double, no
    lone surrogate), no key twice in one object, and at most max_depth nested arrays and
    objects: deeper data could not be written out again (orjson stops at 255 levels) and
    would end the whole shard. Integers are kept exactly as written, however long (orjson
    would make a float of one beyond 64 bits, or refuse one beyond a double): a text holding
    one is read by the standard library's parser, held to the same rule. Raises JsonRejected
    with the reason.
    """
    raw = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    long_number = LONG_NUMBER.search(raw) is not None  # an integer orjson may not hold exactly
    exact = False
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if not long_number:
            raise JsonRejected("invalid_json", str(exc)) from None
        try:  # perhaps an integer too long for a double, which Python holds exactly
            value, exact = _exact_loads(raw), True
        except (ValueError, RecursionError):
            raise JsonRejected("invalid_json", str(exc)) from None
    if raw.count(b"[") + raw.count(b"{") > max_depth and too_deep(value, max_depth):
        raise JsonRejected("too_deep", f"arrays and objects nest more than max_record_depth ({max_depth}) levels")
    if key := duplicate_key(raw, value):
        raise JsonRejected("duplicate_key", f"the key {key!r} appears twice in one object")
    # Read again only now: within max_depth, the standard library's recursive parser is safe.
    return _exact_loads(raw) if long_number and not exact else value


def _exact_loads(raw: bytes) -> Any:
    """raw by the standard library's parser, which keeps integers exact, held to orjson's rule:
    ValueError for NaN, Infinity, a number beyond a double, a lone surrogate, a BOM."""

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    def finite(text: str) -> float:
        if math.isinf(number := float(text)):
            raise ValueError(f"{text} is beyond a double")
        return number

    value = json.loads(raw.decode("utf-8"), parse_constant=no_constant, parse_float=finite)
    json.dumps(value, ensure_ascii=False).encode("utf-8")  # a lone surrogate raises UnicodeEncodeError
    return value


class FaultingReader(io.RawIOBase):
    """A raw stream over read_chunks, so that read errors reach the CSV reader as ReadFault."""

    def __init__(self, f: IO[bytes]) -> None:
        self._chunks = read_chunks(f)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._pending:
            self._pending = next(self._chunks, b"")
        size = min(len(buffer), len(self._pending))
        buffer[:size], self._pending = self._pending[:size], self._pending[size:]
        return size
