"""Moderation by shard: each shard screened once and its screening stored; verdicts follow the kept copy."""

from __future__ import annotations

import json
from pathlib import Path

from tasks.moderation import ModerationCache, ModerationOptions, ShardScreening, moderate_dataset
from tasks.passes.chat import ChatPass
from tasks.readers import ExtractOptions
from tasks.reduce import dedup_and_split
from tasks.shards.plan import CutHistory, plan_shards
from tasks.shards.store import prepare_shard
from tasks.transform import TransformOptions
from tests.conftest import chat, write_jsonl

OPTIONS = ModerationOptions(mode="report", model="m", batch_size=4, concurrency=2)


def records(start: int, n: int) -> list:
    """Benign chats; every 5th says KILL, and every 10th also comes as a lower-case copy (a duplicate
    by content whose own text the classifier below does not flag)."""
    found = []
    for i in range(start, start + n):
        text = f"Wo ist Bestellung AR-{i}?" + (" Sonst KILL ich dich." if i % 5 == 0 else "")
        found.append(chat(text, f"AR-{i} ist unterwegs."))
        if i % 10 == 0:
            found.append(chat(text.lower(), f"ar-{i} ist unterwegs."))
    return found


class Classifier:
    """Flags texts saying KILL in capitals (case matters, so a copy's verdict can differ); counts what is sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.requests = 0

    def __call__(self, texts: list[str]) -> list[list[str]]:
        self.sent += texts
        self.requests += 1
        return [["violence", "harassment"] if "KILL" in text else [] for text in texts]


def prepared(source: Path, work: Path, out: Path):
    plan = plan_shards([str(source)], ExtractOptions(), 2_000, CutHistory(work / "cuts"))
    record_pass = ChatPass.for_model("gpt-4o-mini-2024-07-18", ExtractOptions(), TransformOptions(), 0.2)
    results = [prepare_shard(shard, record_pass, work) for shard in plan.shards]
    out.mkdir(parents=True, exist_ok=True)
    return results, dedup_and_split(results, out / ".staged", out)


def kept_lines(split) -> dict[str, list[str]]:
    return {name: Path(path).read_text().splitlines() for name, path in
            (("train", split.train_path), ("validation", split.validation_path))}


def never() -> Classifier:
    raise AssertionError("a stored screening was screened again")


def test_each_shard_is_screened_once_and_the_split_counts_the_copy_it_kept(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", records(0, 60))
    shards, split = prepared(source, tmp_path / "work", tmp_path / "out")
    assert len(shards) > 3
    classify = Classifier()
    cache = ModerationCache(tmp_path / "work" / "moderation.sqlite3")
    result = moderate_dataset(split, shards, tmp_path / "out" / ".staged", OPTIONS, lambda: classify, cache)

    kept = kept_lines(split)
    expected = {name: [i for i, line in enumerate(lines) if "KILL" in line] for name, lines in kept.items()}
    lower_kept = sum("sonst kill ich dich" in line for lines in kept.values() for line in lines)
    assert 0 < lower_kept < 6, "both kinds of kept copy occur, so the test sees the copy decide"
    assert result.flagged == sum(map(len, expected.values())) == 12 - lower_kept
    assert result.by_category == {"harassment": result.flagged, "violence": result.flagged}
    assert result.examples == split.train + split.validation == 60
    assert len(classify.sent) == len(set(classify.sent)) == 66  # every shard's examples, each text once
    assert result.requests == classify.requests and result.cached == 0
    stored = [ShardScreening.stored(Path(s.directory), "m") for s in shards]
    assert sum(s.examples for s in stored) == 66 and sum(len(s.flagged) for s in stored) == 12

    again = moderate_dataset(split, shards, tmp_path / "out" / ".staged", OPTIONS, never, cache)
    assert (again.flagged, again.by_category, again.requests, again.cached) == (
        result.flagged, result.by_category, 0, sum(s.kept for s in shards))

    rejecting = moderate_dataset(split, shards, tmp_path / "out" / ".staged",
                                 ModerationOptions(mode="reject", model="m", batch_size=4, concurrency=2), never, cache)
    assert rejecting.rejected == {"moderation:violence": result.flagged}
    assert not any("KILL" in line for lines in kept_lines(rejecting.split).values() for line in lines)
    moved = [json.loads(line) for line in Path(rejecting.rejected_path).read_text().splitlines()]
    assert len(moved) == result.flagged and all("KILL" in r["record"]["messages"][0]["content"] for r in moved)


def test_a_rerun_on_grown_input_screens_only_the_new_shard(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", records(0, 60))
    shards, split = prepared(source, tmp_path / "work", tmp_path / "out")
    cache = ModerationCache(tmp_path / "work" / "moderation.sqlite3")
    moderate_dataset(split, shards, tmp_path / "out" / ".staged", OPTIONS, Classifier, cache)

    with open(source, "a") as f:
        f.writelines(json.dumps(record) + "\n" for record in records(60, 6))
    grown, split = prepared(source, tmp_path / "work", tmp_path / "out-2")
    assert sum(not s.reused for s in grown) == 1
    classify = Classifier()
    result = moderate_dataset(split, grown, tmp_path / "out-2" / ".staged", OPTIONS, lambda: classify, cache)
    new = next(s for s in grown if not s.reused)
    assert len(classify.sent) == new.kept and all("AR-6" in t or "ar-6" in t for t in classify.sent)
    assert result.cached == sum(s.kept for s in grown) - new.kept
    assert result.flagged == sum("KILL" in line for lines in kept_lines(split).values() for line in lines)
