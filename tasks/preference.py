"""Preference data (DPO): raw feedback -> OpenAI preference pairs, with stable rejection reasons.

Three raw shapes, detected per record from its keys:
- `hh`: chosen/rejected transcript pairs as in Anthropic's HH-RLHF files, two full
  conversations in "Human:/Assistant:" form that share a prefix and differ in the final
  assistant turn;
- `openai`: OpenAI's preference JSONL as is (`input`, `preferred_output`, `non_preferred_output`);
- `rated`: one rated candidate answer per record (a conversation, an answer, a rating:
  thumbs, score or rank). Pairs are formed per conversation, best against worst, when the
  ratings differ by at least `min_margin`.

Every function here is pure: the prepare pass composes them record by record.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import tiktoken

from ftflow.jsonl import dumps_exact
from tasks.budget import count_example_tokens
from tasks.checks import check_example

Shape = Literal["hh", "openai", "rated"]

# Stable names: reports and docs/rejections.md key on them.
PAIR_REASONS = {
    "unknown_preference_shape": "a record that is none of: chosen/rejected, OpenAI preference, rated answer",
    "no_shared_prefix": "chosen and rejected conversations do not share the turns before the answer",
    "output_not_single_assistant_turn": "a preferred or non-preferred output that is not one assistant turn",
    "input_not_ending_on_user": "the shared input does not end on a user turn",
    "identical_outputs": "preferred and non-preferred outputs are the same after normalisation",
    "invalid_rating": "a rated answer whose rating is not a thumbs value, a number or a rank",
    "unpaired_rating": "a conversation with fewer than two rated answers, or all rated alike",
    "rating_margin_too_small": "the best and worst answers' ratings differ by less than the minimum margin",
}

THUMBS = {"up": 1.0, "down": 0.0, "👍": 1.0, "👎": 0.0, "thumbs_up": 1.0, "thumbs_down": 0.0,
          "good": 1.0, "bad": 0.0, "positive": 1.0, "negative": 0.0}
HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")
HH_ROLES = {"Human": "user", "Assistant": "assistant"}
NEAR_IDENTICAL_RATIO = 0.9


class PairRejected(Exception):
    """A record or conversation that yields no usable pair; `reason` is one of PAIR_REASONS."""

    def __init__(self, reason: str, detail: str) -> None:
        assert reason in PAIR_REASONS, reason
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class PreferencePair:
    """One line of OpenAI's preference JSONL."""

    input: dict[str, Any]
    preferred: list[dict[str, Any]]
    non_preferred: list[dict[str, Any]]

    def to_record(self) -> dict[str, Any]:
        return {"input": self.input, "preferred_output": self.preferred, "non_preferred_output": self.non_preferred}


@dataclass(frozen=True)
class RatedAnswer:
    conversation: str  # the conversation's key: its id, or a digest of its messages
    messages: list[dict[str, Any]]
    answer: dict[str, Any]
    score: float


@dataclass(frozen=True)
class PairTokens:
    input: int
    preferred: int
    non_preferred: int

    @property
    def trained(self) -> int:
        """Tokens one epoch trains on: the input with each output, as two sequences."""
        return 2 * self.input + self.preferred + self.non_preferred


# --- shapes -----------------------------------------------------------------------------------


def detect_shape(record: Any) -> Shape | None:
    if not isinstance(record, dict):
        return None
    if "chosen" in record and "rejected" in record:
        return "hh"
    if "input" in record and "preferred_output" in record and "non_preferred_output" in record:
        return "openai"
    if ("answer" in record or "completion" in record) and any(k in record for k in ("rating", "score", "rank")):
        return "rated"
    return None


def parse_hh_transcript(text: str) -> list[dict[str, Any]]:
    """`\\n\\nHuman: ...\\n\\nAssistant: ...` -> chat messages (roles user/assistant)."""
    if not isinstance(text, str):
        raise PairRejected("unknown_preference_shape", "chosen/rejected must be strings")
    marks = list(HH_TURN.finditer(text))
    if not marks or text[: marks[0].start()].strip():
        raise PairRejected("unknown_preference_shape", "no 'Human:'/'Assistant:' turn at the start")
    messages = []
    for mark, following in zip(marks, [*marks[1:], None], strict=True):
        end = following.start() if following else len(text)
        messages.append({"role": HH_ROLES[mark.group(1)], "content": text[mark.end():end].strip()})
    return messages


def _single_assistant_turn(output: Any, which: str) -> list[dict[str, Any]]:
    if (not isinstance(output, list) or len(output) != 1 or not isinstance(output[0], dict)
            or output[0].get("role") != "assistant"):
        raise PairRejected("output_not_single_assistant_turn", f"{which} must be exactly one assistant message")
    return output


def _checked_input(messages: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    if not messages:
        raise PairRejected("no_shared_prefix", "the input has no messages before the answers")
    if messages[-1].get("role") != "user":
        raise PairRejected("input_not_ending_on_user",
                           f"the input ends on {messages[-1].get('role')!r}, not on a user turn")
    return {"messages": messages, **(extra or {})}


def pair_from_hh(record: dict[str, Any]) -> PreferencePair:
    """Split two full conversations into their shared prefix and the two differing answers."""
    chosen = parse_hh_transcript(record["chosen"])
    rejected = parse_hh_transcript(record["rejected"])
    if chosen == rejected:
        raise PairRejected("identical_outputs", "chosen and rejected are the same conversation")
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == 0:
        raise PairRejected("no_shared_prefix", "chosen and rejected differ from their first turn")
    prefix, preferred, non_preferred = chosen[:shared], chosen[shared:], rejected[shared:]
    if not preferred or not non_preferred:
        raise PairRejected("output_not_single_assistant_turn", "one side has no answer after the shared turns")
    _single_assistant_turn(preferred, "the chosen answer")
    _single_assistant_turn(non_preferred, "the rejected answer")
    return PreferencePair(_checked_input(prefix), preferred, non_preferred)


def pair_from_openai(record: dict[str, Any]) -> PreferencePair:
    data = record["input"]
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
        raise PairRejected("unknown_preference_shape", "input must be an object with a messages list")
    extra = {k: v for k, v in data.items() if k != "messages"}
    messages = [m if isinstance(m, dict) else {} for m in data["messages"]]
    return PreferencePair(
        _checked_input(messages, extra),
        _single_assistant_turn(record["preferred_output"], "preferred_output"),
        _single_assistant_turn(record["non_preferred_output"], "non_preferred_output"),
    )


def rating_score(record: dict[str, Any]) -> float:
    """Higher is better. Thumbs map to 1/0, a score stays, a rank (1 = best) is negated."""
    if "rank" in record:
        rank = record["rank"]
        if isinstance(rank, str) and rank.strip().lstrip("-").isdigit():  # table cells arrive as text
            rank = int(rank)
        if isinstance(rank, bool) or not isinstance(rank, int | float):
            raise PairRejected("invalid_rating", f"rank {rank!r} is not a number")
        return -float(rank)
    value = record.get("rating", record.get("score"))
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in THUMBS:
            return THUMBS[text]
        try:
            return float(text)
        except ValueError:
            pass
    raise PairRejected("invalid_rating", f"rating {value!r} is not thumbs up/down, a number or a rank")


def rated_answer(record: dict[str, Any]) -> RatedAnswer:
    messages = record.get("messages")  # as JSON text in a table cell, decoded by the reader
    if messages is None and isinstance(record.get("prompt"), str):
        messages = [{"role": "user", "content": record["prompt"]}]
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise PairRejected("unknown_preference_shape", "a rated answer needs `messages` (a list) or `prompt`")
    answer = record.get("answer", record.get("completion"))
    if isinstance(answer, str):
        answer = {"role": "assistant", "content": answer}
    if not isinstance(answer, dict) or answer.get("role") != "assistant":
        raise PairRejected("output_not_single_assistant_turn", "the answer must be a string or one assistant message")
    key = record.get("conversation_id")
    conversation = str(key) if key is not None else conversation_key(messages)
    return RatedAnswer(conversation, messages, answer, rating_score(record))


def pair_from_ratings(answers: list[RatedAnswer], min_margin: float) -> PreferencePair:
    """Best against worst of one conversation's rated answers (the first of equals wins)."""
    if len(answers) < 2:
        raise PairRejected("unpaired_rating", "only one rated answer for this conversation")
    best = max(answers, key=lambda a: a.score)
    worst = min(answers, key=lambda a: a.score)
    margin = best.score - worst.score
    if margin == 0:
        raise PairRejected("unpaired_rating", f"all {len(answers)} answers are rated {best.score:g}")
    if margin < min_margin:
        raise PairRejected("rating_margin_too_small", f"ratings differ by {margin:g}, under the minimum {min_margin:g}")
    return PreferencePair(_checked_input(best.messages), [best.answer], [worst.answer])


def to_pair(record: dict[str, Any], shape: Shape) -> PreferencePair:
    """A pair from one `hh` or `openai` record (rated answers pair up per conversation)."""
    return pair_from_hh(record) if shape == "hh" else pair_from_openai(record)


# --- checks and figures -------------------------------------------------------------------------


def normalized_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    text = content if isinstance(content, str) else dumps_exact(content).decode()
    if message.get("tool_calls"):
        text += dumps_exact(message["tool_calls"], sort_keys=True).decode()
    return " ".join(text.split()).casefold()


def check_outputs_differ(pair: PreferencePair) -> None:
    if normalized_text(pair.preferred[0]) == normalized_text(pair.non_preferred[0]):
        raise PairRejected("identical_outputs", "preferred and non-preferred outputs are identical")


def check_pair(pair: PreferencePair, encoding: tiktoken.Encoding, limit: int, *, max_record_depth: int) -> PairTokens:
    """Return the pair's token counts; raise PairRejected or ExampleRejected (checks.REASONS).

    Each output with the input is one training sequence: both go through the chat example
    checks (roles, keys, tools, special tokens, the token limit) as a supervised example would.
    """
    check_outputs_differ(pair)
    extra = {k: v for k, v in pair.input.items() if k != "messages"}
    for output in (pair.preferred, pair.non_preferred):
        check_example({"messages": [*pair.input["messages"], *output], **extra}, encoding, limit,
                      max_record_depth=max_record_depth)
    return pair_tokens(pair, encoding)


def near_identical(pair: PreferencePair, ratio: float = NEAR_IDENTICAL_RATIO) -> bool:
    """The two outputs differ in little (difflib ratio at or above `ratio`): a weak signal."""
    a, b = normalized_text(pair.preferred[0]), normalized_text(pair.non_preferred[0])
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() >= ratio


def pair_tokens(pair: PreferencePair, encoding: tiktoken.Encoding) -> PairTokens:
    """Tokens of the input (with tools) and of each output, counted as for chat examples."""
    extra = {k: v for k, v in pair.input.items() if k in ("tools", "functions")}
    with_preferred, preferred = count_example_tokens({"messages": [*pair.input["messages"], *pair.preferred], **extra},
                                                     encoding)
    with_other, non_preferred = count_example_tokens(
        {"messages": [*pair.input["messages"], *pair.non_preferred], **extra}, encoding)
    return PairTokens(input=with_preferred - preferred, preferred=preferred, non_preferred=non_preferred)


def conversation_key(messages: Iterable[dict[str, Any]]) -> str:
    """Digest of a conversation without its system prompt: the unit of the train/validation split."""
    turns = [{"role": m.get("role"), "content": normalized_text(m)} for m in messages if m.get("role") != "system"]
    return hashlib.sha256(dumps_exact(turns)).hexdigest()


def pair_digest(pair: PreferencePair) -> str:
    """Digest of the normalised pair, for de-duplication."""
    canonical = {
        "input": conversation_key(pair.input["messages"]),
        "tools": pair.input.get("tools"),
        "preferred": normalized_text(pair.preferred[0]),
        "non_preferred": normalized_text(pair.non_preferred[0]),
    }
    return hashlib.sha256(dumps_exact(canonical, sort_keys=True)).hexdigest()


@dataclass
class PreferenceFigures:
    """Dataset-level figures of kept pairs, for the report and the preference suite."""

    pairs: int = 0
    near_identical: int = 0
    preferred_longer: int = 0
    token_lengths: list[int] = field(default_factory=list)

    def add(self, pair: PreferencePair, tokens: PairTokens) -> None:
        self.pairs += 1
        self.near_identical += near_identical(pair)
        self.preferred_longer += tokens.preferred > tokens.non_preferred

    @property
    def length_bias(self) -> float:
        """Share of pairs whose preferred answer is the longer one (0.5 is neutral)."""
        return self.preferred_longer / self.pairs if self.pairs else 0.0

    @property
    def near_identical_share(self) -> float:
        return self.near_identical / self.pairs if self.pairs else 0.0

    def to_row(self) -> dict[str, Any]:
        """The one-row frame the `preference` suite checks."""
        return {"pairs": self.pairs, "near_identical_share": round(self.near_identical_share, 4),
                "length_bias": round(self.length_bias, 4)}
