from __future__ import annotations

import pytest

from ftflow.encodings import get_encoding
from tasks.preference import (
    PAIR_REASONS,
    PairRejected,
    PreferenceFigures,
    check_outputs_differ,
    conversation_key,
    detect_shape,
    pair_digest,
    pair_from_hh,
    pair_from_openai,
    pair_from_ratings,
    pair_tokens,
    parse_hh_transcript,
    rated_answer,
)

ENC = get_encoding("o200k_base")


def hh(*turns: str) -> str:
    return "".join(f"\n\n{t}" for t in turns)


def openai_pair(messages, preferred="Gern!", other="Nein.") -> dict:
    return {"input": {"messages": messages}, "preferred_output": [{"role": "assistant", "content": preferred}],
            "non_preferred_output": [{"role": "assistant", "content": other}]}


def test_shapes_are_detected_from_their_keys():
    assert detect_shape({"chosen": "", "rejected": ""}) == "hh"
    assert detect_shape(openai_pair([])) == "openai"
    assert detect_shape({"prompt": "x", "answer": "y", "rating": "up"}) == "rated"
    assert detect_shape({"messages": []}) is None
    assert detect_shape([1]) is None


def test_multi_turn_hh_pair_splits_the_shared_prefix_into_the_input():
    record = {
        "chosen": hh("Human: Mein Akku lädt nicht.", "Assistant: Welches Modell?", "Human: Talblitz 300.",
                     "Assistant: Bitte bring ihn in die Werkstatt."),
        "rejected": hh("Human: Mein Akku lädt nicht.", "Assistant: Welches Modell?", "Human: Talblitz 300.",
                       "Assistant: Kauf einen neuen."),
    }
    pair = pair_from_hh(record)
    assert [m["role"] for m in pair.input["messages"]] == ["user", "assistant", "user"]
    assert pair.input["messages"][2]["content"] == "Talblitz 300."
    assert pair.preferred == [{"role": "assistant", "content": "Bitte bring ihn in die Werkstatt."}]
    assert pair.non_preferred == [{"role": "assistant", "content": "Kauf einen neuen."}]


def test_hh_transcript_needs_a_speaker_at_the_start():
    with pytest.raises(PairRejected) as err:
        parse_hh_transcript("hello\n\nHuman: hi")
    assert err.value.reason == "unknown_preference_shape"


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"chosen": hh("Human: a", "Assistant: b"), "rejected": hh("Human: z", "Assistant: c")}, "no_shared_prefix"),
        ({"chosen": hh("Human: a", "Assistant: b", "Human: more", "Assistant: c"),
          "rejected": hh("Human: a", "Assistant: x")}, "output_not_single_assistant_turn"),
        ({"chosen": hh("Human: a", "Assistant: b"), "rejected": hh("Human: a", "Assistant: b", "Human: c")},
         "output_not_single_assistant_turn"),
        ({"chosen": hh("Human: a", "Assistant: b", "Assistant: c"), "rejected": hh("Human: a", "Assistant: b",
                                                                                   "Assistant: d")},
         "input_not_ending_on_user"),
    ],
)
def test_hh_rejections(record, reason):
    with pytest.raises(PairRejected) as err:
        pair_from_hh(record)
    assert err.value.reason == reason


def test_openai_rejections():
    with pytest.raises(PairRejected) as err:
        pair_from_openai(openai_pair([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]))
    assert err.value.reason == "input_not_ending_on_user"
    record = openai_pair([{"role": "user", "content": "a"}])
    record["preferred_output"].append({"role": "assistant", "content": "more"})
    with pytest.raises(PairRejected) as err:
        pair_from_openai(record)
    assert err.value.reason == "output_not_single_assistant_turn"
    with pytest.raises(PairRejected) as err:
        pair_from_openai({"input": "text", "preferred_output": [], "non_preferred_output": []})
    assert err.value.reason == "unknown_preference_shape"


def test_identical_outputs_after_normalisation_are_rejected():
    pair = pair_from_openai(openai_pair([{"role": "user", "content": "a"}], "Gern  geschehen", "gern geschehen"))
    with pytest.raises(PairRejected) as err:
        check_outputs_differ(pair)
    assert err.value.reason == "identical_outputs"


def test_rated_answers_pair_best_against_worst_with_a_margin():
    rows = [{"conversation_id": "c1", "prompt": "Wo ist mein Rad?", "answer": a, "rating": r}
            for a, r in [("Unterwegs!", 5), ("Keine Ahnung.", 1), ("Bald.", 3)]]
    pair = pair_from_ratings([rated_answer(r) for r in rows], min_margin=2)
    assert pair.preferred[0]["content"] == "Unterwegs!"
    assert pair.non_preferred[0]["content"] == "Keine Ahnung."
    with pytest.raises(PairRejected) as err:
        pair_from_ratings([rated_answer(r) for r in rows], min_margin=5)
    assert err.value.reason == "rating_margin_too_small"
    with pytest.raises(PairRejected) as err:
        pair_from_ratings([rated_answer(rows[0])], min_margin=1)
    assert err.value.reason == "unpaired_rating"


def test_thumbs_and_ranks():
    up = rated_answer({"prompt": "p", "answer": "a", "rating": "👍"})
    down = rated_answer({"prompt": "p", "answer": "b", "rating": "down"})
    assert (up.score, down.score) == (1.0, 0.0)
    assert up.conversation == down.conversation  # same prompt, same conversation
    first = rated_answer({"prompt": "p", "answer": "a", "rank": 1})
    second = rated_answer({"prompt": "p", "answer": "b", "rank": 2})
    assert pair_from_ratings([second, first], min_margin=1).preferred[0]["content"] == "a"
    with pytest.raises(PairRejected) as err:
        rated_answer({"prompt": "p", "answer": "a", "rating": "meh"})
    assert err.value.reason == "invalid_rating"


def test_conversation_key_ignores_the_system_prompt():
    turns = [{"role": "user", "content": "Hallo"}]
    assert conversation_key([{"role": "system", "content": "A"}, *turns]) == conversation_key(
        [{"role": "system", "content": "B"}, *turns])
    assert conversation_key(turns) != conversation_key([{"role": "user", "content": "Servus"}])


def test_pairs_that_differ_only_in_whitespace_share_a_digest():
    a = pair_from_openai(openai_pair([{"role": "user", "content": "Hallo"}], "Ja  gern", "Nein"))
    b = pair_from_openai(openai_pair([{"role": "user", "content": "hallo "}], "ja gern", "nein"))
    assert pair_digest(a) == pair_digest(b)


def test_length_bias_on_a_crafted_set():
    figures = PreferenceFigures()
    user = [{"role": "user", "content": "Frage"}]
    for preferred, other in [("eine lange, ausführliche und freundliche Antwort", "kurz"),
                             ("noch eine sehr lange und ausführliche Antwort hier", "knapp"),
                             ("lang lang lang lang lang lang lang", "nein"),
                             ("ok", "eine viel längere, aber schlechtere Antwort als die andere")]:
        pair = pair_from_openai(openai_pair(user, preferred, other))
        figures.add(pair, pair_tokens(pair, ENC))
    assert figures.pairs == 4
    assert figures.length_bias == pytest.approx(0.75)


def test_pair_tokens_count_input_once_per_output():
    pair = pair_from_openai(openai_pair([{"role": "user", "content": "Hallo"}], "Ja", "Nein danke"))
    tokens = pair_tokens(pair, ENC)
    assert tokens.preferred == len(ENC.encode("Ja"))
    assert tokens.non_preferred == len(ENC.encode("Nein danke"))
    assert tokens.trained == 2 * tokens.input + tokens.preferred + tokens.non_preferred


def test_every_reason_is_documented():
    doc = (__import__("pathlib").Path(__file__).resolve().parents[2] / "docs" / "rejections.md").read_text()
    for reason in PAIR_REASONS:
        assert f"`{reason}`" in doc, reason
