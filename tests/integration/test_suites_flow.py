"""Every expectation in expectations/*.json fails on some raw dataset run through `prepare`.

A check that cannot fail on the pipeline's own output is not a check: each case below builds a
small raw dataset that the pipeline accepts record by record, runs the whole flow, and sees the
quality gate name that expectation. The drift cases compare with the feature summary of a clean
run, as `retrain` does with the last successful run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from flows.prepare import prepare
from ftflow.errors import QualityGateFailed
from tasks.suites import SUITES
from tests.conftest import ROOT, chat, write_jsonl

GATES = {"validation_fraction": 0.3}  # 40 examples: held-out ones for certain, whatever the hash
PROMPT = {"system_prompt": "Du bist der Alpenrad-Support."}


def conversations(n: int, *, start: int = 0, words: int = 12, email_every: int = 0) -> list[dict]:
    """Distinct support chats whose answers have about `words` words."""
    rows = []
    for i in range(start, start + n):
        question = f"Frage {i}: Wo ist meine Bestellung AR-{i:05d}?"
        if email_every and i % email_every == 0:
            question += f" Schreib mir an kunde{i}@example.org."
        answer = " ".join([f"Bestellung AR-{i:05d} ist unterwegs."] + ["Danke"] * max(words - 4, 0))
        rows.append(chat(question, answer))
    return rows


@dataclass
class Case:
    records: list[Any]
    gates: dict[str, Any] = field(default_factory=lambda: GATES)  # settings overrides
    transform: dict[str, Any] = field(default_factory=lambda: PROMPT)
    drift: bool = False  # compare with the clean run's feature summary
    note: str = ""  # why the case fails, shown when it does not


CLEAN = conversations(40)
CASES: dict[str, Case] = {
    "examples.n_user": Case(
        CLEAN + [{"messages": [{"role": "system", "content": "x"}, {"role": "assistant", "content": f"Hallo {i}"}]}
                 for i in range(6)],
        note="6 of 46 examples without a user turn: more than the 5% tolerated",
    ),
    "dataset.train_examples": Case(conversations(5), gates={"validation_fraction": 0.0}),
    "dataset.rejected_share": Case(CLEAN + ["{broken"] * 20, note="20 of 60 records rejected"),
    "dataset.validation_examples": Case(CLEAN, gates={"validation_fraction": 1e-9}),
    "drift.p50_tokens_change": Case(conversations(40, words=40), drift=True),
    "drift.p95_tokens_change": Case(conversations(36) + conversations(4, start=36, words=120), drift=True,
                                    note="only the longest tenth grows"),
    "drift.role_mix_shift": Case(CLEAN, transform={}, drift=True,
                                 note="no system turn any more: thirds become halves"),
    "drift.pii_share_change": Case(conversations(40, email_every=4), drift=True),
    "drift.rejected_share_change": Case(CLEAN + ["{broken"] * 6, drift=True,
                                        note="13% rejected: under the gate's 25%, but not like last time"),
    "drift.duplicate_share_change": Case(CLEAN + CLEAN[:6], drift=True),
}


def expectation_names() -> set[str]:
    names = set()
    for suite in SUITES:
        spec = json.loads((ROOT / "expectations" / f"{suite}.json").read_text())
        names |= {f"{suite}.{e['kwargs']['column']}" for e in spec["expectations"]}
    return names


def test_every_expectation_has_a_failing_case():
    assert set(CASES) == expectation_names()


def run_prepare(tmp_path: Path, case: Case, previous: dict[str, Any] | None) -> dict[str, Any]:
    source = write_jsonl(tmp_path / "chats.jsonl", case.records)
    return prepare([str(source)], out_dir=str(tmp_path / "out"), overrides={**case.transform, **case.gates},
                   previous_features=previous if case.drift else None)


@pytest.fixture(scope="module")
def clean_summary(prefect_server, tmp_path_factory) -> dict[str, Any]:
    """The feature summary of a clean run: what `retrain` keeps from its last successful run."""
    report = run_prepare(tmp_path_factory.mktemp("clean"), Case(CLEAN), None)
    assert report["quality"]["success"] and report["quality"]["drift"]["checked"] is False
    return report["quality"]["features"]


@pytest.mark.flow
@pytest.mark.parametrize("name", CASES)
def test_prepare_fails_the_expectation_by_name(name: str, clean_summary: dict[str, Any], tmp_path: Path):
    with pytest.raises(QualityGateFailed) as failure:
        run_prepare(tmp_path, CASES[name], clean_summary)
    assert f"{name}:" in str(failure.value), CASES[name].note
    assert ("compares with the last successful run" in str(failure.value)) == name.startswith("drift.")
    report = json.loads((tmp_path / "out" / "report.json").read_text())  # a failed gate still leaves the report
    assert any(f.startswith(f"{name}:") for f in report["quality"]["failed"])


@pytest.mark.flow
def test_the_same_data_again_shows_no_drift(clean_summary: dict[str, Any], tmp_path: Path):
    report = run_prepare(tmp_path, Case(CLEAN, drift=True), clean_summary)
    assert report["quality"]["success"] and report["quality"]["drift"]["checked"] is True
    assert set(report["quality"]["drift"]["changes"].values()) == {0.0}

