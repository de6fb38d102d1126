"""Provider rules: a backend's per-example rules quarantine examples after de-duplication; counts add up."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from ftflow.cli import app
from tasks import provider_rules
from tasks.provider_rules import apply_rules
from tasks.reduce import ReduceResult
from tests.conftest import chat, write_jsonl


def no_secret(example: dict) -> tuple[str, str] | None:
    for message in example.get("messages", []):
        if "SECRET" in message.get("content", ""):
            return "secret_word", f"the {message['role']} message says SECRET"
    return None


def write_split(tmp_path, train: list[dict], validation: list[dict]) -> ReduceResult:
    paths = {name: tmp_path / f"{name}.jsonl" for name in ("train", "validation")}
    for name, examples in (("train", train), ("validation", validation)):
        write_jsonl(paths[name], examples)
    # features rows interleave the splits, as the reduce writes them
    rows = [{"split": "validation", "source": "v.jsonl", "loc": f"line {i + 1}"} for i in range(len(validation))]
    rows[1:1] = [{"split": "train", "source": "t.jsonl", "loc": f"line {i + 1}"} for i in range(len(train))]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "features.parquet")
    return ReduceResult(train=len(train), validation=len(validation), duplicates_removed=0,
                        train_path=str(paths["train"]), validation_path=str(paths["validation"]),
                        duplicates_path=str(tmp_path / "duplicates.jsonl"),
                        features_path=str(tmp_path / "features.parquet"), train_sha256="", validation_sha256="")


def test_refused_lines_move_to_the_rejected_file_with_their_place_and_the_split_is_rewritten(tmp_path):
    train = [chat(f"q{i}", "SECRET" if i in (1, 3) else f"a{i}") for i in range(5)]
    validation = [chat("SECRET v", "a"), chat("v", "a")]
    split = write_split(tmp_path, train, validation)

    moved = apply_rules(split, tmp_path, no_secret)

    assert moved.rejected == {"secret_word": 3}
    assert (moved.split.train, moved.split.validation) == (3, 1)
    kept = (tmp_path / "train.jsonl").read_bytes()
    assert [json.loads(line)["messages"][0]["content"] for line in kept.splitlines()] == ["q0", "q2", "q4"]
    assert moved.split.train_sha256 == hashlib.sha256(kept).hexdigest()
    rejected = [json.loads(line) for line in (tmp_path / "provider-rejected.jsonl").read_text().splitlines()]
    assert [(r["source"], r["loc"], r["reason"]) for r in rejected] == [
        ("t.jsonl", "line 2", "secret_word"), ("t.jsonl", "line 4", "secret_word"),
        ("v.jsonl", "line 1", "secret_word")]
    assert rejected[0]["detail"] == "the assistant message says SECRET" and rejected[0]["record"] == train[1]
    features = pq.read_table(tmp_path / "features.parquet").to_pylist()
    assert [(f["split"], f["loc"]) for f in features] == [("train", "line 1"), ("train", "line 3"),
                                                          ("train", "line 5"), ("validation", "line 2")]


def test_no_rules_or_nothing_refused_moves_nothing(tmp_path):
    split = write_split(tmp_path, [chat("q", "a")], [chat("v", "a")])
    assert apply_rules(split, tmp_path, None).split == split
    assert apply_rules(split, tmp_path, no_secret).rejected == {}
    assert not (tmp_path / "provider-rejected.jsonl").exists()


@pytest.mark.flow
def test_prepare_quarantines_what_the_backends_rules_refuse_and_counts_add_up(prefect_server, tmp_path, monkeypatch):
    monkeypatch.setitem(provider_rules.RULES, "local", no_secret)
    monkeypatch.setenv("FTFLOW_WORK_DIR", str(tmp_path / "work"))
    examples = [chat(f"Wo ist Bestellung AR-{i}?", "SECRET" if i % 10 == 0 else f"AR-{i} ist unterwegs.")
                for i in range(40)]
    data = write_jsonl(tmp_path / "data.jsonl", [*examples, examples[5]])  # one duplicate
    result = CliRunner().invoke(app, ["prepare", str(data), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, (result.output, result.stderr)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["rejected"] == {"secret_word": 4}
    assert report["rejected_by_stage"]["provider_rules"] == {"secret_word": 4}
    assert sum(report["examples_written"].values()) == 36 and report["duplicates_removed"] == 1
    rejected = [json.loads(line) for line in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert sorted(r["loc"] for r in rejected) == ["line 1", "line 11", "line 21", "line 31"]
    kept = [json.loads(line) for name in ("train", "validation")
            for line in (tmp_path / "out" / f"{name}.jsonl").read_text().splitlines()]
    assert len(kept) == 36 and not any(no_secret(example) for example in kept)
