from __future__ import annotations

import yaml

from ftflow.deployments import PREFECT_YAML, load_deployments


def test_prefect_yaml_deployments_load_with_schedule_and_parameters():
    deployments = {d.name: d for d in load_deployments()}
    assert set(deployments) == {"retrain", "prepare", "finetune"}
    retrain = deployments["retrain"]
    assert retrain.schedules and retrain.schedules[0].schedule.cron == "0 3 * * 1"
    assert retrain.parameters["sources"] == ["data/raw/*"]
    assert not deployments["prepare"].schedules and not deployments["finetune"].schedules
    spec = yaml.safe_load(PREFECT_YAML.read_text())
    assert {d["work_pool"]["name"] for d in spec["deployments"]} == {"ftflow"}
    assert "key" not in PREFECT_YAML.read_text().lower().replace("api keys are read", "")
