"""Transcripts: plain text with speaker prefixes at the start of a line (`User: ...`).

A `.txt` file holds conversations separated by a line `---`; a JSON record may hold one in a
string field (`text`, `transcript`, or `--text-key`). Prefixes map to roles by DEFAULT_SPEAKERS
and the `speakers` setting.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from ftflow.reading import ReadFault, TooLong
from tasks.readers import Candidate, ExtractOptions, Item, Rejection
from tasks.readers.compressed import fault_rejection, numbered_lines, open_source, too_long_rejection

TEXT_KEYS = ("text", "transcript")  # the fields of a JSON record that may hold a transcript
DEFAULT_SPEAKERS = {
    "human": "user",
    "user": "user",
    "customer": "user",
    "assistant": "assistant",
    "ai": "assistant",
    "agent": "assistant",
    "bot": "assistant",
    "system": "system",
}
TRANSCRIPT_SEPARATOR = re.compile(r"^-{3,}\s*$")


def speaker_pattern(speakers: dict[str, str]) -> tuple[re.Pattern[str], dict[str, str]]:
    """Regex matching a speaker prefix at the start of a line, and prefix -> role."""
    mapping = {**DEFAULT_SPEAKERS, **{k.lower(): v for k, v in speakers.items()}}
    names = sorted(mapping, key=len, reverse=True)
    alternatives = "|".join(re.escape(n) for n in names)
    return re.compile(rf"^[ \t]*({alternatives})[ \t]*:[ \t]?", re.IGNORECASE | re.MULTILINE), mapping


def parse_transcript(text: str, speakers: dict[str, str]) -> list[dict[str, str]]:
    """Split a transcript into turns at speaker prefixes that start a line.

    Raises ValueError when there is no prefix, or text stands before the first one.
    """
    pattern, mapping = speaker_pattern(speakers)
    matches = list(pattern.finditer(text))
    if not matches:
        raise ValueError("no speaker prefix at the start of any line")
    if text[: matches[0].start()].strip():
        raise ValueError("text before the first speaker prefix")
    turns = []
    for match, following in zip(matches, [*matches[1:], None], strict=True):
        end = following.start() if following else len(text)
        role = mapping[match.group(1).lower()]
        turns.append({"role": role, "content": text[match.end() : end]})
    return turns


def read_transcript_file(
    path: Path, options: ExtractOptions, *, start: int = 0, end: int | None = None, first_line: int = 1
) -> Iterator[Item]:
    """One conversation per block; blocks are separated by a line of `---`. Streamed by line.

    A shard reads bytes [start, end), which begin and end at block boundaries, numbered from first_line.
    """
    source = str(path)

    def block_item(lines: list[str], start: int, bad_line: int | None, long: TooLong | None) -> Item | None:
        text = "".join(lines)
        if long is not None:  # the block holds a line over the maximum: rejected by that line
            return too_long_rejection(source, f"line {start}", long, options.max_record_bytes)
        if bad_line is not None:
            return Rejection(source, f"line {start}", "invalid_utf8", f"line {bad_line} is not valid UTF-8", text)
        if not text.strip():
            return None
        try:
            return Candidate(source, f"line {start}", {"messages": parse_transcript(text, options.speakers)})
        except ValueError as exc:
            return Rejection(source, f"line {start}", "unparseable_transcript", str(exc), text)

    block: list[str] = []
    block_start, bad_line, long = first_line, None, None
    with open_source(path, options) as f:
        try:
            for number, raw in numbered_lines(f, start, end, first_line, options.max_record_bytes):
                if isinstance(raw, TooLong):
                    long = long or raw
                    continue
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    line, bad_line = raw.decode("utf-8", "replace"), bad_line or number
                if TRANSCRIPT_SEPARATOR.match(line):
                    if item := block_item(block, block_start, bad_line, long):
                        yield item
                    block, block_start, bad_line, long = [], number + 1, None, None
                else:
                    block.append(line)
        except ReadFault as fault:
            # The block being read may be cut short: it goes with the unreadable rest.
            fault.partial = "".join(block).encode() + fault.partial
            yield fault_rejection(fault, source, f"line {block_start}")
            return
    if item := block_item(block, block_start, bad_line, long):
        yield item
