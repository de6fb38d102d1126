"""The fast chat pass (tasks/passes/fast_chat.py) writes what the reference (tasks/passes/chat.py)
writes, byte for byte: every file of a shard (examples, rejections, features, result.json but
its folder), and, through the reduce, train, validation, duplicates and dataset_sha256.

On the sample data under several settings, on every file of the bad-input corpus, on synthetic
conversations from the bench's generator, on records that reach every quality rejection, and
on records hypothesis makes (odd unicode, tool calls, content parts, weights, names, PII,
special tokens, repeated keys, long integers, deep nesting, broken bytes).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.prepare_vs_cookbook import write_input
from ftflow.errors import FtflowError
from ftflow.jsonl import LONG_NUMBER
from tasks.passes import record_pass_for
from tasks.passes.chat import ChatPass
from tasks.passes.fast_chat import FastChatPass, decode_fast, has_long_digit_run
from tasks.readers import ExtractOptions
from tasks.readers.jsonl import decode_record
from tasks.reduce import dedup_and_split
from tasks.report import dataset_sha256
from tasks.shards.plan import Shard, plan_shards
from tasks.shards.store import prepare_shard
from tasks.transform import TransformOptions
from tests.conftest import ROOT
from tests.data.bad_inputs.generate import make_special

MODEL = "gpt-4o-mini-2024-07-18"
CORPUS = ROOT / "tests" / "data" / "bad_inputs"
SETTINGS = {
    "defaults": {},
    "prompt replaced": {"system_prompt": "Du bist der Alpenrad-Support. Antworte auf Deutsch als JSON."},
    "prompt if missing, PII reported": {"system_prompt": "Kurz.", "system_prompt_mode": "if-missing", "pii": "report"},
    "PII off, roles mapped": {"pii": "off", "role_map": {"kunde": "user", "berater": "assistant", "narrator": "tool"}},
}


def passes(transform: dict[str, Any] | None = None, extract: ExtractOptions | None = None,
           training_context: int | None = None) -> tuple[ChatPass, FastChatPass]:
    reference = ChatPass.for_model(MODEL, extract or ExtractOptions(), TransformOptions(**(transform or {})), 0.3)
    if training_context is not None:
        reference = replace(reference, training_context=training_context)
    fast = FastChatPass(**{field.name: getattr(reference, field.name) for field in fields(reference)})
    return reference, fast


def shard_outputs(record_pass: ChatPass, shard: Shard, directory: Path) -> dict[str, Any]:
    """Everything the pass writes for the shard (or the error it raises), its folder left out."""
    try:
        record_pass.write(shard, directory)
    except (FtflowError, ValueError, OSError) as exc:
        return {"error": (type(exc).__name__, str(exc).replace(str(directory), "<dir>"))}
    result = orjson.loads((directory / "result.json").read_bytes())
    del result["directory"]
    return {
        "examples.jsonl": (directory / "examples.jsonl").read_bytes(),
        "rejected.jsonl": (directory / "rejected.jsonl").read_bytes(),
        "features.parquet": pq.read_table(directory / "features.parquet").to_pylist(),
        "result.json": result,
    }


def assert_same_shards(shards: list[Shard], tmp_path: Path, reference: ChatPass, fast: FastChatPass) -> list[dict]:
    """Both passes on every shard: the same outputs. Returns the reference's."""
    written = []
    for shard in shards:
        expected = shard_outputs(reference, shard, tmp_path / "reference" / str(shard.index))
        got = shard_outputs(fast, shard, tmp_path / "fast" / str(shard.index))
        assert got == expected, f"{shard.name}: the fast pass differs"
        written.append(expected)
    return written


def reduced(record_pass: ChatPass, sources: list[str], work: Path, shard_bytes: int) -> dict[str, Any]:
    """What the flow publishes of these sources, as plain functions: splits, duplicates, features."""
    plan = plan_shards(sources, record_pass.extract, shard_bytes)
    results = [prepare_shard(shard, record_pass, work / "work") for shard in plan.shards]
    out = work / "out"
    split = dedup_and_split(results, out / ".staged", out)
    return {"train": Path(split.train_path).read_bytes(), "validation": Path(split.validation_path).read_bytes(),
            "duplicates": (out / "duplicates.jsonl").read_bytes(),
            "features": pq.read_table(out / "features.parquet").to_pylist(),
            "dataset_sha256": dataset_sha256(Path(split.train_path), Path(split.validation_path))}


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


# --- the sample data, the bad inputs, synthetic conversations -----------------------------------------------


@pytest.mark.parametrize("transform", SETTINGS.values(), ids=SETTINGS.keys())
def test_the_sample_data_gives_the_same_dataset(transform, tmp_path):
    reference, fast = passes(transform)
    sources = [str(ROOT / "data" / "raw" / "*")]
    shards = plan_shards(sources, reference.extract, 64 << 10).shards  # a few shards per JSONL file
    assert len(shards) > 4
    assert_same_shards(shards, tmp_path, reference, fast)
    published = reduced(fast, sources, tmp_path / "fast-run", 64 << 10)
    assert published == reduced(reference, sources, tmp_path / "reference-run", 64 << 10)
    assert published["duplicates"] and published["train"] and published["validation"]


def bad_input_cases() -> list:
    cases = json.loads((CORPUS / "cases.json").read_text("utf-8"))
    chat = [case for case in cases if "--method" not in case["args"] and case["special"] != "postgres"]
    return [pytest.param(case, id=case["kind"]) for case in chat]


@pytest.mark.parametrize("case", bad_input_cases())
def test_every_bad_input_gives_the_same_shards(case, tmp_path):
    """Each file of the case's folder, and its SQLite database, as prepare would read them."""
    folder = tmp_path / "case"
    if (CORPUS / case["kind"]).exists():
        shutil.copytree(CORPUS / case["kind"], folder)
    else:
        folder.mkdir()
    if case["special"] == "sqlite":
        make_special(folder, case)
        extract = ExtractOptions(sql_url=f"sqlite:///{folder}/messages.sqlite", query="SELECT * FROM messages")
        shards = plan_shards([], extract).shards
    else:
        extract = ExtractOptions()
        files = sorted(path for path in folder.iterdir() if path.is_file())
        shards = [shard for path in files for shard in plan_shards([str(path)], extract, 256).shards]
    reference, fast = passes(extract=extract)
    assert_same_shards(shards, tmp_path, reference, fast)


def test_synthetic_conversations_give_the_same_shards(tmp_path):
    source = tmp_path / "input.jsonl"
    write_input(source, 2000)
    for name, transform in SETTINGS.items():
        reference, fast = passes(transform)
        shards = plan_shards([str(source)], reference.extract, 1 << 20).shards
        written = assert_same_shards(shards, tmp_path / name, reference, fast)
        assert sum(w["result.json"]["kept"] for w in written) > 1900


def test_a_memo_cleared_every_few_strings_gives_the_same_shards(tmp_path, monkeypatch):
    """The memo starts afresh when full: between records, never losing what one record found."""
    import tasks.passes.fast_chat as fast_chat

    monkeypatch.setattr(fast_chat, "MEMO_ENTRIES", 3)
    source = tmp_path / "input.jsonl"
    write_input(source, 1000)
    reference, fast = passes(SETTINGS["prompt replaced"])
    written = assert_same_shards(plan_shards([str(source)], reference.extract).shards, tmp_path, reference, fast)
    assert written[0]["result.json"]["pii"]


def test_examples_at_the_training_context_edge_give_the_same_shards(tmp_path):
    """The context at the median example: as many tokens is kept, one more is too long."""
    source = tmp_path / "input.jsonl"
    write_input(source, 600)
    reference, fast = passes()
    shard = plan_shards([str(source)], reference.extract).shards[0]
    tokens = sorted(row["tokens"] for row in shard_outputs(reference, shard, tmp_path / "all")["features.parquet"])
    edge = tokens[len(tokens) // 2]
    reference, fast = passes(training_context=edge)
    kept = assert_same_shards([shard], tmp_path, reference, fast)[0]["features.parquet"]
    assert max(row["tokens"] for row in kept) == edge and tokens.count(edge + 1)


# --- every quality rejection ---------------------------------------------------------------------------------


def chat(*messages: dict[str, Any], **example: Any) -> dict[str, Any]:
    return {"messages": list(messages), **example}


USER, ANSWER = {"role": "user", "content": "Wo ist AR-1?"}, {"role": "assistant", "content": "Unterwegs."}
CALL = {"id": "c1", "type": "function", "function": {"name": "track", "arguments": '{"order": "AR-1"}'}}
TOOL_TURNS = ({"role": "assistant", "tool_calls": [CALL]}, {"role": "tool", "tool_call_id": "c1", "content": "ok"})
# One record per quality rejection reason, and kept records of every shape the walk hands back.
REJECTED = {
    "data_type": chat(USER, "not a message", ANSWER),
    "missing_messages": {"messages": []},
    "unknown_key": chat(USER, {**ANSWER, "mood": "happy"}),
    "unknown_role": chat({"role": "narrator", "content": "Es war einmal"}, USER, ANSWER),
    "missing_content": chat({"role": "user"}, ANSWER),
    "non_string_content": chat({"role": "user", "content": 42}, ANSWER),
    "empty_content": chat({"role": "user", "content": "  \n "}, ANSWER),
    "no_assistant_message": chat(USER, {"role": "user", "content": "Hallo?"}),
    "malformed_tool_calls": chat(USER, {"role": "assistant", "tool_calls": "track"}),
    "unknown_tool_call_id": chat(USER, {"role": "tool", "tool_call_id": "c9", "content": "ok"}, ANSWER),
    "malformed_tools": chat(USER, ANSWER, tools="track"),
    "invalid_weight": chat(USER, {**ANSWER, "weight": 2}),
    "too_long": chat(USER, {"role": "assistant", "content": "Sehr lange Antwort " * 100}),
    "special_token": chat(USER, {"role": "assistant", "content": "fertig <|endoftext|>"}),
    "duplicate_key": chat(USER, {"role": "assistant", "tool_calls": [
        {**CALL, "function": {"name": "f", "arguments": '{"a": 1, "a": 2}'}}]}, TOOL_TURNS[1], ANSWER),
    "too_deep": chat(USER, {"role": "assistant", "tool_calls": [
        {**CALL, "function": {"name": "f", "arguments": "[" * 70 + "]" * 70}}]}, TOOL_TURNS[1], ANSWER),
    "invalid_json": chat(USER, {"role": "assistant", "tool_calls": [
        {**CALL, "function": {"name": "f", "arguments": "{nope"}}]}, TOOL_TURNS[1], ANSWER),
}
KEPT = [
    chat(USER, ANSWER),
    chat({"content": "Hallo ", "role": "Human"}, {"content": " Hi", "role": "gpt"}, {"role": "user", "content": "x"}),
    chat(USER, {"role": "user", "content": "Noch da?"}, ANSWER, {"role": "assistant", "content": "Ja."}),
    chat({"role": "system", "content": "Alt."}, USER, ANSWER),
    chat({"role": "user", "content": ""}, {"role": "user", "content": "Frage"}, ANSWER),
    chat({"role": "user", "content": "Ruf an: +49 30 1234567, kunde@example.de"}, ANSWER),
    chat({"role": "user", "content": "<| nicht speziell"}, ANSWER),
    chat(USER, ANSWER, {"role": "narrator", "content": "weg"}, {"role": "user", "content": "auch weg"}),
    chat(USER, *TOOL_TURNS, ANSWER, tools=[{"type": "function", "function": {"name": "track"}}]),
    chat({"role": "user", "content": [{"type": "text", "text": "Teil"}], "name": "kunde"}, {**ANSWER, "weight": 0}),
]


def test_every_quality_rejection_and_every_kept_shape_give_the_same_shard(tmp_path):
    lines = [orjson.dumps(record) for record in (*REJECTED.values(), *KEPT)]
    source = write_lines(tmp_path / "input.jsonl", lines)
    reasons = set()
    for name, transform in SETTINGS.items():
        reference, fast = passes(transform, training_context=200)
        shards = plan_shards([str(source)], reference.extract).shards
        written = assert_same_shards(shards, tmp_path / name, reference, fast)
        reasons |= {orjson.loads(line)["reason"] for line in written[0]["rejected.jsonl"].splitlines()}
        assert written[0]["result.json"]["kept"] == len(KEPT)
    assert reasons == set(REJECTED)


# --- the fast decoder ------------------------------------------------------------------------------------------


@given(st.binary(max_size=300))
def test_long_digit_runs_are_found_as_the_regex_finds_them(raw):
    assert has_long_digit_run(raw) == (LONG_NUMBER.search(raw) is not None)
    padded = raw + b"1234567890123456789"
    assert has_long_digit_run(padded) == (LONG_NUMBER.search(padded) is not None)


RAW_LINES = [
    b'{"messages": [{"role": "user", "content": "a", "role": "user"}]}',  # repeated key
    b'{"messages": [{"role": "user", "content": "caf\xe9"}]}',  # not UTF-8
    b'{"messages": [{"role": "user", "content": "\xed\xa0\x80"}]}',  # an encoded surrogate
    b'{"messages": [{"role": "user", "content": "a\\ud800"}]}',  # a lone surrogate
    b'{"messages": [], "n": 123456789012345678901234567890}',  # beyond 64 bits
    b'{"messages": [], "n": 1e400}',  # beyond a double
    b'{"messages": [], "n": NaN}',
    b'{"messages": ' + b"[" * 80 + b"]" * 80 + b"}",  # too deep
    b'[{"role": "user", "content": "x"}]',  # not an object
    b'{"turns": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}',  # nested
    b'{"text": "User: q\\nAssistant: a"}',  # a transcript in a field
    b'{"text": "no speaker"}',
    b'{"other": 1}',
    b'{"messages": [{"role": "user", "content": "1234567890123456789"}, {"role": "assistant", "content": "a"}]}',
]


@pytest.mark.parametrize("raw", RAW_LINES)
def test_the_fast_decoder_gives_the_reference_item(raw):
    options = ExtractOptions()
    assert decode_fast("s", "line 1", raw, options) == decode_record("s", "line 1", raw, options)


# --- generated records ---------------------------------------------------------------------------------------

ODD_TEXT = st.text(alphabet=st.one_of(
    st.sampled_from(" \t\n\r\u00a0\u2028\u200b\ufeffé€😀\u0301ß<|>{}[]\":\\/@+-.0123456789"),
    st.characters(codec="utf-8", exclude_categories=("Cs",)),
), max_size=40)
PII_TEXT = st.sampled_from(["kunde@example.de", "+49 30 1234567", "DE89 3704 0044 0532 0130 00", "192.168.1.20",
                            "4111 1111 1111 1111", "Kundennummer 0176 12345678", '{"mail": "a@b.de"}'])
SPECIAL = st.sampled_from(["<|endoftext|>", "<|im_start|>", "<|fim_prefix|>", "<|nope|>", "<|"])
WORDS = st.lists(st.sampled_from(["Hallo", "Bestellung", "AR-1", "danke", " ", "\n", "Straße", "İstanbul", "ﬃ", "😀",
                                  "ΣΊΣΥΦΟΣ", "\t", "{\"a\": 1}"]), min_size=1, max_size=8).map(" ".join)
TEXT = st.one_of(WORDS, WORDS, ODD_TEXT, PII_TEXT, SPECIAL, st.just("Du bist der Alpenrad-Support."),
                 st.lists(st.one_of(WORDS, ODD_TEXT, PII_TEXT, SPECIAL), max_size=4).map(" ".join))
ROLE = st.one_of(st.sampled_from(["system", "user", "assistant", "tool", "Human", " GPT ", "bot", "kunde", "narrator",
                                  "", "Assistant"]), ODD_TEXT)
PART = st.one_of(st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}),
                 st.fixed_dictionaries({"type": st.just("image_url"), "image_url": st.just({"url": "x"})}),
                 st.fixed_dictionaries({"type": st.just("text"), "text": TEXT, "extra": st.just(1)}))
CONTENT = st.one_of(TEXT, TEXT, TEXT, st.none(), st.integers(), st.lists(PART, max_size=3))
TOOL_CALL = st.fixed_dictionaries(
    {"id": st.sampled_from(["c1", "c2"]), "function": st.fixed_dictionaries(
        {"name": st.one_of(st.just("track"), TEXT), "arguments": st.one_of(
            st.just('{"order": "AR-1"}'), st.just('{"a": 1, "a": 2}'), st.just("[" * 70 + "]" * 70), TEXT)})},
    optional={"type": st.sampled_from(["function", "other"])})
MESSAGE = st.fixed_dictionaries(
    {"role": ROLE, "content": CONTENT},
    optional={"name": st.one_of(TEXT, st.integers()), "weight": st.sampled_from([0, 1, 2, True, None, 0.0]),
              "tool_calls": st.lists(TOOL_CALL, max_size=2), "tool_call_id": st.sampled_from(["c1", "c3"]),
              "mood": st.just("x")})
COMMON = st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "Human", "gpt"]),
                                "content": TEXT})  # the walk's own shape, many of them
EXAMPLE = st.fixed_dictionaries(
    {"messages": st.one_of(st.lists(st.one_of(COMMON, COMMON, MESSAGE), max_size=7), st.none(), st.just("x"))},
    optional={"tools": st.one_of(st.just([{"type": "function", "function": {"name": "track"}}]), st.just("x")),
              "parallel_tool_calls": st.sampled_from([True, "yes"]), "extra": st.just(1)})
COMMON_EXAMPLE = st.lists(COMMON, min_size=1, max_size=6).map(lambda messages: {"messages": messages})
REPEATED_KEY = st.sampled_from([(rb'"role":', b'"role":"user","role":'), (rb'"content":', b'"content":"","content":'),
                                ((rb'"messages":'), b'"messages":[],"messages":')])
LINE = st.one_of(COMMON_EXAMPLE.map(orjson.dumps), COMMON_EXAMPLE.map(lambda e: json.dumps(e).encode()),
                 st.tuples(COMMON_EXAMPLE.map(orjson.dumps), REPEATED_KEY).map(
                     lambda case: re.sub(case[1][0], case[1][1], case[0], count=1)),
                 EXAMPLE.map(lambda e: json.dumps(e, ensure_ascii=False).encode()),
                 EXAMPLE.map(lambda e: json.dumps(e).encode()),
                 EXAMPLE.map(lambda e: json.dumps(e, separators=(",", ":")).encode()).map(
                     lambda raw: re.sub(rb'"role":', b'"role":"user","role":', raw, count=1)),
                 st.sampled_from(RAW_LINES), st.binary(max_size=30))
TRANSFORM = st.fixed_dictionaries({
    "system_prompt": st.one_of(st.none(), st.just("Du bist der Alpenrad-Support."), st.just("  "),
                               st.just("System <|endoftext|>"), TEXT),
    "system_prompt_mode": st.sampled_from(["replace", "if-missing"]),
    "pii": st.sampled_from(["off", "report", "mask"]),
    "role_map": st.sampled_from([{}, {"narrator": "assistant", "kunde": "user"}, {"Human": "assistant"}]),
})


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(lines=st.lists(LINE, min_size=1, max_size=12), transform=TRANSFORM,
       training_context=st.sampled_from([40, 120, 65536]))
def test_generated_records_give_the_same_shard(lines, transform, training_context, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("generated")
    source = write_lines(tmp_path / "input.jsonl", [line.replace(b"\n", b" ") for line in lines])
    reference, fast = passes(transform, training_context=training_context)
    assert_same_shards(plan_shards([str(source)], reference.extract).shards, tmp_path, reference, fast)


@settings(max_examples=300, deadline=None)
@given(raw=LINE, max_record_depth=st.sampled_from([1, 2, 3, 4, 64]))
def test_generated_lines_decode_to_the_reference_item(raw, max_record_depth):
    options = ExtractOptions(max_record_depth=max_record_depth)
    assert decode_fast("s", "line 1", raw, options) == decode_record("s", "line 1", raw, options)


# --- choosing the engine --------------------------------------------------------------------------------------


def test_the_engine_setting_chooses_the_pass_keys_stored_shards_apart_and_keeps_inputs_sha256():
    from ftflow.settings import Settings

    assert type(record_pass_for(Settings())) is FastChatPass
    assert type(record_pass_for(Settings(engine="reference"))) is ChatPass
    assert type(record_pass_for(Settings(engine="fast", method="dpo", model="gpt-4.1-mini-2025-04-14"))).__name__ \
        == "PreferencePass"
    reference, fast = passes()
    assert reference.fingerprint() != fast.fingerprint()  # stored shards apart
    assert reference.outputs_fingerprint() == fast.outputs_fingerprint()  # the same inputs_sha256
