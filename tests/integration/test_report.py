"""A failed quality gate names its cause when the rejections explain it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ftflow.cli import app
from tasks.report import rejection_causes
from tests.conftest import ROOT


def rejection(source: str, loc: str, reason: str, detail: str) -> str:
    return json.dumps({"source": source, "loc": loc, "reason": reason, "detail": detail, "record": "x"})


def test_rejection_causes_name_the_top_reasons_with_counts_and_their_first_place(tmp_path):
    rejected = tmp_path / "rejected.jsonl"
    rejected.write_text("\n".join([
        rejection("a.jsonl", "line 2", "invalid_json", "Expecting value"),
        rejection("b.jsonl.gz", "line 1", "corrupt_file", "corrupt compressed data (Not a gzipped file)"),
        rejection("a.jsonl", "line 5", "invalid_json", "later"),
        rejection("c.jsonl", "line 9", "empty_content", "x" * 300),
        rejection("c.jsonl", "line 12", "unknown_role", "role 'bot'"),
    ]) + "\n")
    counts = {"invalid_json": 2, "corrupt_file": 5, "empty_content": 1, "unknown_role": 1}
    text = rejection_causes(counts, rejected)
    assert text == (
        "rejected: corrupt_file 5 (first: b.jsonl.gz line 1: corrupt compressed data (Not a gzipped file)), "
        "invalid_json 2 (first: a.jsonl line 2: Expecting value), "
        f"empty_content 1 (first: c.jsonl line 9: {'x' * 117}...), and 1 more reasons (see rejected.jsonl)"
    )
    assert rejection_causes({"invalid_json": 1}, tmp_path / "gone.jsonl") == (
        "rejected: invalid_json 1 (first: not in rejected.jsonl)")


@pytest.mark.flow
def test_a_gate_failed_by_an_unreadable_file_says_the_file_could_not_be_read(prefect_server, tmp_path):
    source = ROOT / "tests/data/bad_inputs/gz_not_gzip/plain.jsonl.gz"
    result = CliRunner().invoke(app, ["prepare", str(source), "--out", str(tmp_path / "out")])
    assert result.exit_code == 3, (result.output, result.stderr)
    [line] = result.stderr.splitlines()
    assert line.startswith("error: quality gate failed: dataset.train_examples: 0, expected >= 10;")
    assert line.endswith(f"; rejected: corrupt_file 1 (first: {source} line 1: corrupt compressed data "
                         "(Not a gzipped file (b'{\"')); the rest of the file is unreadable)")


@pytest.mark.flow
def test_a_gate_failure_without_rejections_lists_none(prefect_server, tmp_path):
    """Too few examples and nothing rejected: no rejection explains the gate, the message stays as it was."""
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Frage {i}"},
                                                     {"role": "assistant", "content": f"Antwort {i}"}]}) + "\n"
                            for i in range(5)))
    result = CliRunner().invoke(app, ["prepare", str(data), "--out", str(tmp_path / "out")])
    assert result.exit_code == 3, (result.output, result.stderr)
    assert "dataset.train_examples: " in result.stderr and "rejected:" not in result.stderr
