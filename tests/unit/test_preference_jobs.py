"""plan_job for preference data: method dpo with beta, and a key that differs from supervised's."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from ftflow.errors import DataError
from ftflow.settings import get_settings
from tasks.jobs import plan_job


def planned(tmp_path, prepared_for: str, **settings):
    (tmp_path / "report.json").write_text(json.dumps({"dataset_sha256": "d" * 64, "n_epochs": 3,
                                                      "method": prepared_for}))
    return plan_job.fn(str(tmp_path), get_settings(model="gpt-4.1-mini-2025-04-14", **settings),
                       SimpleNamespace(file_id="file-t"), None)


def test_dpo_job_carries_method_and_beta_and_its_own_key(tmp_path):
    dpo = planned(tmp_path, "dpo", method="dpo", dpo_beta=0.3)
    assert dpo.method == "dpo" and dpo.hyperparameters == {"n_epochs": 3, "beta": 0.3}
    other_beta = planned(tmp_path, "dpo", method="dpo", dpo_beta=0.2)
    assert other_beta.key != dpo.key
    supervised = planned(tmp_path, "supervised", method="supervised")
    assert supervised.hyperparameters == {"n_epochs": 3} and supervised.key != dpo.key


def test_a_folder_prepared_for_another_method_is_refused(tmp_path):
    with pytest.raises(DataError, match="prepared for method 'supervised'"):
        planned(tmp_path, "supervised", method="dpo")
