"""`prepare --method dpo` as a flow: every pair accounted for, the suite gate, the published files."""

from __future__ import annotations

import json

import pytest
from prefect.task_runners import ThreadPoolTaskRunner

from flows.prepare import prepare
from ftflow.errors import QualityGateFailed
from tests.conftest import ROOT

pytestmark = pytest.mark.flow
MODEL = "gpt-4.1-mini-2025-04-14"


def test_prepare_dpo_accounts_for_every_pair_and_gates_on_length_bias(prefect_server, tmp_path):
    run = prepare.with_options(task_runner=ThreadPoolTaskRunner(max_workers=1))
    out = tmp_path / "out"
    overrides = {"model": MODEL, "method": "dpo", "work_dir": str(tmp_path / "work")}
    report = run([str(ROOT / "data/preference/*")], out_dir=str(out), overrides=overrides)
    written = report["examples_written"]
    assert report["method"] == "dpo"
    assert report["records_read"] == (written["train"] + written["validation"] + sum(report["rejected"].values())
                                      + report["duplicates_removed"])
    assert {"identical_outputs", "no_shared_prefix", "output_not_single_assistant_turn", "input_not_ending_on_user",
            "special_token", "unpaired_rating"} <= set(report["rejected"])
    lines = (out / "train.jsonl").read_text().splitlines()
    assert len(lines) == written["train"]
    assert set(json.loads(lines[0])) == {"input", "preferred_output", "non_preferred_output"}
    assert report["preference"]["pairs"] == written["train"] and 0.5 < report["preference"]["length_bias"] < 1

    with pytest.raises(QualityGateFailed, match="length_bias"):
        run([str(ROOT / "data/preference/*")], out_dir=str(out), overrides={**overrides, "dpo_max_length_bias": 0.5})
    assert not (out / "train.jsonl").exists() and json.loads((out / "report.json").read_text())["gate"]["passed"] is False
