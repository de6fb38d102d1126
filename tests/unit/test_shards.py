"""Shards, the fused per-shard pass and the reduce, without Prefect (the flow tests run them in flows)."""

from __future__ import annotations

import json
import os
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ftflow.errors import FtflowError, ShardFailed
from ftflow.jsonl import file_sha256, read_chunks
from tasks.passes.chat import ChatPass, shard_items
from tasks.readers import ExtractOptions
from tasks.readers.jsonl import read_json_lines
from tasks.readers.table import read_parquet_table
from tasks.readers.transcript import read_transcript_file
from tasks.reduce import HashedOutput, dedup_and_split, digest_partitions
from tasks.report import dataset_sha256
from tasks.shards.plan import CutHistory, Shard, plan_shards
from tasks.shards.runner import shards_to_prepare_here
from tasks.shards.store import ShardFiles, prepare_shard
from tasks.transform import TransformOptions
from tests.conftest import chat, write_jsonl


def records(n: int = 120) -> list:
    """Conversations with PII, duplicates (exact and case/whitespace variants) and bad records."""
    good = [chat(f"Frage {i}: Wo ist Bestellung AR-{i}? Mail an kunde{i}@example.de", f"Antwort {i}", system="LANG")
            for i in range(n)]
    variants = [chat(f"frage {i}:  wo ist bestellung ar-{i}? mail an KUNDE{i}@example.de", f"antwort {i}",
                     system="LANG") for i in range(0, n, 7)]
    bad = ["{broken", {"messages": [{"role": "user", "content": "nur Frage"}]}, {"messages": "x"}, [1, 2]]
    return [*good, *good[:10], *variants, *bad]


def settings(**transform) -> ChatPass:
    return ChatPass.for_model("gpt-4o-mini-2024-07-18", ExtractOptions(), TransformOptions(**transform), 0.2)


def run(sources: list[str], work: Path, out: Path, shard_bytes: int, **transform) -> dict:
    """Plan, prepare every shard, reduce: what the flow does, as plain functions."""
    plan = plan_shards(sources, ExtractOptions(), shard_bytes, CutHistory(work / "cuts"))
    results = [prepare_shard(shard, settings(**transform), work) for shard in plan.shards]
    out.mkdir(parents=True, exist_ok=True)
    split = dedup_and_split(results, out / ".staged", out)
    read = sum(r.records_read for r in results)
    rejected = sum(sum(n.values()) for r in results for n in r.rejected.values())
    assert read == split.train + split.validation + rejected + split.duplicates_removed
    return {
        "shards": len(plan.shards),
        "reused": sum(r.reused for r in results),
        "train": Path(split.train_path).read_bytes(),
        "validation": Path(split.validation_path).read_bytes(),
        "sha": dataset_sha256(Path(split.train_path), Path(split.validation_path)),
        "counts": (read, split.train, split.validation, rejected, split.duplicates_removed),
        "tokens": pq.read_table(split.features_path).column("tokens").to_pylist(),
    }


def test_line_shards_cover_the_file_at_line_boundaries_with_absolute_line_numbers(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", records())
    with open(path, "a") as f:
        f.write("\n\n")  # blank lines hold no record, wherever a cut falls
    whole = [(i.loc, type(i).__name__) for i in read_json_lines(path, ExtractOptions())]
    plan = plan_shards([str(path)], ExtractOptions(), 700)
    assert len(plan.shards) > 10
    assert plan.shards[0].start == 0 and plan.shards[-1].end == path.stat().st_size
    data = path.read_bytes()
    for before, after in zip(plan.shards, plan.shards[1:], strict=False):
        assert before.end == after.start and data[after.start - 1 : after.start] == b"\n"
    pieces = [(i.loc, type(i).__name__) for s in plan.shards for i in shard_items(s, ExtractOptions())]
    assert pieces == whole


def test_transcript_shards_cut_only_after_a_separator(tmp_path):
    blocks = [f"Customer: Frage {i}\nwith a second line\nAgent: Antwort {i}\n" for i in range(40)]
    path = tmp_path / "t.txt"
    path.write_text("---\n".join(blocks) + "---\nkein Sprecher\n")
    whole = [(i.loc, type(i).__name__) for i in read_transcript_file(path, ExtractOptions())]
    plan = plan_shards([str(path)], ExtractOptions(), 100)
    assert len(plan.shards) > 5
    for shard in plan.shards[1:]:
        assert path.read_bytes()[: shard.start].endswith(b"---\n")
    pieces = [(i.loc, type(i).__name__) for s in plan.shards for i in shard_items(s, ExtractOptions())]
    assert pieces == whole and len(whole) == 41


def test_parquet_shards_are_row_groups_and_never_split_a_conversation(tmp_path):
    rows = [{"conversation_id": f"c{i // 4}", "turn": i % 4, "role": ["user", "assistant"][i % 2],
             "content": f"text {i}"} for i in range(40)]
    path = tmp_path / "m.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=6)  # groups cut conversations in half
    whole = [(i.loc, i.example["messages"][0]["content"]) for i in read_parquet_table(path, ExtractOptions())]
    plan = plan_shards([str(path)], ExtractOptions(), 1)
    assert len(plan.shards) > 1 and all(s.kind == "parquet" for s in plan.shards)
    pieces = [(i.loc, i.example["messages"][0]["content"]) for s in plan.shards for i in shard_items(s, ExtractOptions())]
    assert pieces == whole and len(whole) == 10


def test_whole_file_shards_for_what_cannot_be_entered_in_the_middle(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([chat("q", "a")]))
    (tmp_path / "m.csv").write_text("conversation_id,turn,role,content\nc1,1,user,Hi\nc1,2,assistant,Hallo\n")
    plan = plan_shards([str(tmp_path / "*")], ExtractOptions(), 1)
    assert [s.kind for s in plan.shards] == ["file", "file"]
    assert set(plan.fingerprints) == {str(tmp_path / "a.json"), str(tmp_path / "m.csv")}


def test_one_shard_many_shards_and_shuffled_input_give_the_same_dataset(tmp_path):
    data = records()
    one = run([str(write_jsonl(tmp_path / "a.jsonl", data))], tmp_path / "w1", tmp_path / "o1", 1 << 20)
    many = run([str(write_jsonl(tmp_path / "b.jsonl", data))], tmp_path / "w2", tmp_path / "o2", 500)
    shuffled_data = list(data)
    random.Random(3).shuffle(shuffled_data)
    half = len(shuffled_data) // 2
    shuffled = run([str(write_jsonl(tmp_path / "c1.jsonl", shuffled_data[:half])),
                    str(write_jsonl(tmp_path / "c2.jsonl", shuffled_data[half:]))], tmp_path / "w3", tmp_path / "o3", 900)
    assert one["shards"] == 1 and many["shards"] > 20 and shuffled["shards"] > 10
    for other in (many, shuffled):
        for key in ("train", "validation", "sha", "counts"):
            assert other[key] == one[key], key
        assert sorted(other["tokens"]) == sorted(one["tokens"])
    read, train, validation, rejected, duplicates = one["counts"]
    assert (read, rejected, duplicates) == (len(data), 4, 10 + len(range(0, 120, 7)))
    assert train > 80 and validation > 10


def test_appended_lines_are_prepared_alone_and_every_earlier_shard_is_reused(tmp_path):
    data = records()
    path = write_jsonl(tmp_path / "a.jsonl", data)
    first = run([str(path)], tmp_path / "work", tmp_path / "o1", 2000)
    with open(path, "a") as f:
        f.write(json.dumps(chat("Neue Frage", "Neue Antwort")) + "\n")
    grown = run([str(path)], tmp_path / "work", tmp_path / "o2", 2000)
    fresh = run([str(path)], tmp_path / "fresh", tmp_path / "o3", 2000)
    # The last range of the first run ended at its end of file: kept, the new line is a shard of its own.
    assert (grown["shards"], grown["reused"]) == (first["shards"] + 1, first["shards"])
    assert fresh["reused"] == 0 and fresh["shards"] == first["shards"]
    assert grown["sha"] == fresh["sha"] != first["sha"] and grown["counts"] == fresh["counts"]
    assert (grown["train"], grown["validation"], grown["tokens"]) == (fresh["train"], fresh["validation"],
                                                                      fresh["tokens"])


def test_previous_cuts_are_kept_only_while_their_bytes_are_unchanged_and_end_a_record(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", records())
    history = CutHistory(tmp_path / "cuts")
    first = plan_shards([str(path)], ExtractOptions(), 2000, history).shards
    assert len(first) > 4

    text = path.read_bytes()
    middle = first[2].start + 10
    path.write_bytes(text[:middle] + (b"X" if text[middle:middle + 1] != b"X" else b"Y") + text[middle + 1:])
    changed = plan_shards([str(path)], ExtractOptions(), 2000, history).shards
    assert changed[:2] == first[:2]  # before the change: the same ranges, the same bytes
    assert changed[2].fingerprint != first[2].fingerprint
    assert changed == plan_shards([str(path)], ExtractOptions(), 2000).shards  # after it: cut afresh

    path.write_bytes(text.rstrip(b"\n"))  # the last line without its newline ...
    plan_shards([str(path)], ExtractOptions(), 2000, history)
    with open(path, "ab") as f:
        f.write(b', "extra": 1}\n')  # ... is continued: the last range no longer ends a record
    continued = plan_shards([str(path)], ExtractOptions(), 2000, history).shards
    assert continued == plan_shards([str(path)], ExtractOptions(), 2000).shards
    # Another shard size is another plan: the recorded cuts are not used for it.
    assert plan_shards([str(path)], ExtractOptions(), 3000, history).shards == plan_shards(
        [str(path)], ExtractOptions(), 3000).shards


def test_a_transcript_range_is_kept_only_if_it_ends_with_a_separator(tmp_path):
    conversation = "user: Wo ist mein Paket?\nassistant: Es kommt morgen.\n"
    path = tmp_path / "t.txt"
    path.write_text("---\n".join([conversation] * 60) + "---\n")
    history = CutHistory(tmp_path / "cuts")
    first = plan_shards([str(path)], ExtractOptions(), 300, history).shards
    with open(path, "a") as f:
        f.write(conversation)  # a new record after the last separator
    grown = plan_shards([str(path)], ExtractOptions(), 300, history).shards
    assert grown[:len(first)] == first and len(grown) == len(first) + 1

    with open(path, "a") as f:
        f.write("user: Und die Rechnung?\n")  # the last record goes on: its range must be read again
    again = plan_shards([str(path)], ExtractOptions(), 300, history).shards
    assert again[:len(first)] == first and again[-1].start == grown[-1].start
    assert again[-1].fingerprint != grown[-1].fingerprint


def test_only_shards_left_to_prepare_worth_a_worker_go_to_worker_processes(tmp_path):
    from prefect import unmapped

    path = write_jsonl(tmp_path / "a.jsonl", records())
    shards = plan_shards([str(path)], ExtractOptions(), 2000).shards
    work = tmp_path / "work"

    def here() -> set:
        return shards_to_prepare_here({"shard": shards, "record_pass": unmapped(settings()),
                                       "work_dir": unmapped(str(work))}, shard_bytes=2000)

    assert here() == set()  # nothing stored: every shard to a worker
    prepare_shard(shards[0], settings(), work)
    assert here() == {shards[0]}  # stored: read back here
    for shard in shards[1:-1]:
        prepare_shard(shard, settings(), work)
    assert here() == set(shards)  # one left to prepare: here too, no worker started for it
    assert shards_to_prepare_here({"shard": shards, "record_pass": unmapped(settings())}) == set()

    # Shards left to prepare that hold less than one shard's bytes in all: here, as one small input.
    small = {"shard": shards, "record_pass": unmapped(settings()), "work_dir": unmapped(str(tmp_path / "other"))}
    size = path.stat().st_size
    assert shards_to_prepare_here(small, shard_bytes=size) == set()
    assert shards_to_prepare_here(small, shard_bytes=size + 1) == set(shards)


def test_a_system_prompt_change_moves_no_example_between_splits(tmp_path):
    path = str(write_jsonl(tmp_path / "a.jsonl", records()))

    def validation_questions(prompt: str, out: str) -> set[str]:
        result = run([path], tmp_path / out, tmp_path / out, 1000, system_prompt=prompt)
        lines = result["validation"].decode().splitlines()
        assert all(json.loads(line)["messages"][0]["content"] == prompt for line in lines)
        # Copies differing only in case or whitespace are one example: compare what identifies it.
        return {" ".join(json.loads(line)["messages"][1]["content"].split()).casefold() for line in lines}

    assert validation_questions("Kurz.", "a") == validation_questions("Ein ganz anderer Prompt.", "b")


def test_a_shard_whose_source_is_deleted_is_named_exits_2_and_leaves_nothing_behind(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", records())
    plan = plan_shards([str(path)], ExtractOptions(), 2000)
    path.unlink()  # deleted between planning and reading: the environment's failure, not a bug
    with pytest.raises(ShardFailed, match=f"{plan.shards[1].name}.*No such file") as raised:
        prepare_shard(plan.shards[1], settings(), tmp_path / "work")
    assert raised.value.exit_code == 2
    assert not list((tmp_path / "work" / "shards").iterdir())


def test_a_missing_column_fails_its_shard_with_the_input_error_exit_code(tmp_path):
    (tmp_path / "m.csv").write_text("id,text\n1,x\n")
    shard = Shard(0, str(tmp_path / "m.csv"), "file", fingerprint="x")
    with pytest.raises(ShardFailed, match="0000-m.csv.*missing column") as raised:
        prepare_shard(shard, settings(), tmp_path / "work")
    assert raised.value.exit_code == 2


def test_every_reader_and_record_pass_is_in_the_code_a_stored_shard_is_keyed_on():
    from tasks.passes.base import ENGINE_CODE, TASKS_DIR
    from tasks.passes.fast_chat import FastChatPass
    from tasks.passes.preference import PreferencePass

    keyed = {*ENGINE_CODE, *ChatPass.code, *FastChatPass.code, *PreferencePass.code}
    modules = {str(module.relative_to(TASKS_DIR)) for folder in ("readers", "passes")
               for module in (TASKS_DIR / folder).glob("*.py")}
    assert modules - {"passes/__init__.py"} <= keyed  # the package only picks the run's pass
    assert all((TASKS_DIR / name).is_file() for name in keyed)


def test_integers_beyond_64_bits_are_written_as_the_input_wrote_them(tmp_path):
    numbers = [123456789012345678901234567890, -98765432109876543210987654321, int("9" * 320)]
    schema = {"type": "object", "properties": {"id": {"type": "integer", "enum": numbers}}}
    tools = [{"type": "function", "function": {"name": "f", "parameters": schema}}]
    path = write_jsonl(tmp_path / "a.jsonl", [{**chat(f"Frage {i}", f"Antwort {i}"), "tools": tools} for i in range(20)])
    out = run([str(path)], tmp_path / "work", tmp_path / "out", 1 << 20)
    written = (out["train"] + out["validation"]).decode().splitlines()
    assert len(written) == 20 and all(f'"enum":[{",".join(map(str, numbers))}]' in line for line in written)


def test_tool_call_arguments_are_held_to_the_runs_max_record_depth(tmp_path):
    arguments = json.dumps([[[[[[[[1]]]]]]]])  # 8 levels; the record around it nests 6
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}
    example = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [call]},
                            {"role": "tool", "tool_call_id": "c1", "content": "ok"},
                            {"role": "assistant", "content": "a"}]}
    path = write_jsonl(tmp_path / "a.jsonl", [example])
    shard = plan_shards([str(path)], ExtractOptions(), 1 << 20).shards[0]
    for depth, rejected in ((8, {}), (7, {"too_deep": 1})):
        shard_settings = replace(settings(), extract=ExtractOptions(max_record_depth=depth))
        result = prepare_shard(shard, shard_settings, tmp_path / f"work{depth}")
        assert result.rejected == {"extract": {}, "quality": rejected}


def test_partitions_of_the_digest_space_give_the_same_output(tmp_path):
    assert digest_partitions(10, 100) == [("00", None)]
    assert digest_partitions(1000, 100)[:2] == [("00", "19"), ("19", "33")]
    path = write_jsonl(tmp_path / "a.jsonl", records())
    plan = plan_shards([str(path)], ExtractOptions(), 3000)
    results = [prepare_shard(shard, settings(), tmp_path / "work") for shard in plan.shards]
    whole = dedup_and_split(results, tmp_path / "a", tmp_path / "a")
    parts = dedup_and_split(results, tmp_path / "b", tmp_path / "b", partition_rows=7)
    for name in ("train.jsonl", "validation.jsonl", "duplicates.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert pq.read_table(tmp_path / "a" / "features.parquet").equals(pq.read_table(tmp_path / "b" / "features.parquet"))
    assert (whole.train, whole.validation, whole.duplicates_removed) == (parts.train, parts.validation,
                                                                         parts.duplicates_removed)
    # The digests the reduce computes as it writes, partition by partition, are the files' own.
    for split in (whole, parts):
        assert split.train_sha256 == file_sha256(Path(split.train_path))
        assert split.validation_sha256 == file_sha256(Path(split.validation_path))


def test_read_chunks_stops_at_the_length_asked_or_at_the_end_of_the_file(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    with open(path, "rb") as f:
        f.seek(2)
        assert list(read_chunks(f, 5, chunk_size=2)) == [b"23", b"45", b"6"]
        assert list(read_chunks(f, 10, chunk_size=4)) == [b"789"]  # the file ends first
        f.seek(0)
        assert list(read_chunks(f, chunk_size=4)) == [b"0123", b"4567", b"89"]


def test_the_reduce_digest_says_where_its_file_ended_if_it_is_cut_under_it(tmp_path):
    with ThreadPoolExecutor(1) as hashing:
        output = HashedOutput(tmp_path / "train.jsonl", hashing)
        output.file.write(b"x" * 10)
        output.file.flush()
        with pytest.raises(FtflowError, match="ended at byte 10 while hashing it up to byte 20"):
            output._hash_until(20)
        output.close()


def test_a_shard_stores_its_examples_in_the_reduce_order_also_when_sorted_in_runs(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "a.jsonl", records())
    in_memory = run([str(path)], tmp_path / "w1", tmp_path / "o1", 1 << 20)
    shard_dir = next((tmp_path / "w1" / "shards").iterdir())
    rows = pq.read_table(shard_dir / "features.parquet").to_pylist()
    assert [(r["content_sha256"], r["line_sha256"], r["ordinal"]) for r in rows] == sorted(
        (r["content_sha256"], r["line_sha256"], r["ordinal"]) for r in rows)
    assert [r["offset"] for r in rows] == [sum(r["length"] for r in rows[:i]) for i in range(len(rows))]

    monkeypatch.setattr(ShardFiles, "SPILL_BYTES", 2000)  # a run every dozen examples or so
    in_runs = run([str(path)], tmp_path / "w2", tmp_path / "o2", 1 << 20)
    assert in_runs == in_memory
    spilled_dir = next((tmp_path / "w2" / "shards").iterdir())
    assert [p.name for p in sorted(spilled_dir.iterdir())] == ["examples.jsonl", "features.parquet", "rejected.jsonl",
                                                               "result.json"]  # the runs are gone
    assert (spilled_dir / "examples.jsonl").read_bytes() == (shard_dir / "examples.jsonl").read_bytes()


def test_the_reduce_refuses_examples_stored_out_of_order(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", records())
    plan = plan_shards([str(path)], ExtractOptions(), 1 << 20)
    results = [prepare_shard(shard, settings(), tmp_path / "work") for shard in plan.shards]
    features = Path(results[0].directory) / "features.parquet"
    table = pq.read_table(features)
    offsets = table.column("offset").to_pylist()
    swapped = pa.array([offsets[1], offsets[0], *offsets[2:]], pa.int64())  # two examples trade places in the file
    pq.write_table(table.set_column(table.schema.get_field_index("offset"), "offset", swapped), features)
    with pytest.raises(FtflowError, match="read out of order"):
        dedup_and_split(results, tmp_path / "out" / ".staged", tmp_path / "out")


def test_task_runner_all_cores_by_default_one_thread_for_one_worker_or_dask():
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from tasks.shards.runner import ShardProcessPool, task_runner_for

    pool = task_runner_for(None, None, 1000)
    assert isinstance(pool, ShardProcessPool) and pool._max_workers == os.cpu_count()
    copy = pool.duplicate()  # what each flow run gets
    assert (type(copy), copy._max_workers, copy._shard_bytes, copy._initializer) == (
        ShardProcessPool, pool._max_workers, 1000, pool._initializer)
    assert task_runner_for(3, None)._max_workers == 3
    assert isinstance(task_runner_for(1, None), ThreadPoolTaskRunner)
    assert isinstance(task_runner_for(None, "tcp://127.0.0.1:8786"), DaskTaskRunner)
