from __future__ import annotations

import yaml

from ftflow.deployments import PREFECT_YAML, load_deployments
from tests.conftest import ROOT


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


def test_served_schedule_keeps_its_timezone():
    """`ftflow serve` once dropped the timezone: the weekly run fired at 03:00 UTC, not 03:00 Vienna."""
    retrain = {d.name: d for d in load_deployments()}["retrain"]
    assert retrain.schedules[0].schedule.timezone == "Europe/Vienna"


def test_each_deployment_runs_one_flow_run_at_a_time():
    for deployment in load_deployments():
        assert deployment.concurrency_limit == 1, deployment.name
        assert deployment.concurrency_options.collision_strategy == "ENQUEUE", deployment.name


def test_the_scheduled_retrain_evaluates_against_the_production_prompt_and_schema():
    parameters = {d.name: d for d in load_deployments()}["retrain"].parameters["overrides"]
    assert (ROOT / parameters["baseline_prompt_file"]).read_text("utf-8").strip()
    assert (ROOT / parameters["eval_json_schema"]).is_file()
