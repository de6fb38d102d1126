"""The retrain deployment on a real Prefect server, as the README runs it: deploy, worker, one run.

Then, through the Prefect API, what the operator sees: the run's name, state and tags, its
summary, plot and history artifacts, a Task Runs list the default UI can read, and the same
schedule (Europe/Vienna) and parameters whether deployed by `prefect deploy` or `ftflow serve`.
"""

from __future__ import annotations

import base64
import json
import re

import pytest

from tests.integration.ui.stack import PrefectStack

pytestmark = [pytest.mark.ui, pytest.mark.xdist_group("ui-stack")]  # one worker starts the module's stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ui")
    worker_env = {"FTFLOW_REGISTRY_URL": f"sqlite:///{folder / 'registry.sqlite3'}",
                  "FTFLOW_SERVICE_DATA_DIR": str(folder / "service"), "FTFLOW_POLL_INITIAL_SECONDS": "0.2",
                  "FTFLOW_POLL_MAX_SECONDS": "1", "FTFLOW_RUNS_DIR": str(folder / "runs")}
    with PrefectStack(folder, worker_env=worker_env) as stack:
        stack.deploy()
        stack.start_worker()
        stack.retrain_run = stack.run("retrain/retrain")  # prefect.yaml's parameters; settings from the worker's env
        yield stack


def artifacts_of(client, flow_run_id):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: a for a in found}


def test_the_run_is_named_after_model_start_and_id_and_tagged_with_dataset_and_trigger(stack):
    run = stack.retrain_run
    assert run.state.type.value == "COMPLETED", (stack.folder / "worker.log").read_text()[-3000:]
    assert re.fullmatch(rf"retrain-gpt-4o-mini-\d{{8}}T\d{{6}}-{run.id.hex[:8]}", run.name), run.name
    assert f"Beginning flow run '{run.name}'" in (stack.folder / "worker.log").read_text()  # the log says the same
    assert "trigger:manual" in run.tags and "trigger:scheduled" not in run.tags
    assert any(re.fullmatch(r"dataset:[0-9a-f]{8}", tag) for tag in run.tags), run.tags


def test_summary_plots_and_history_are_artifacts_of_the_run(stack):
    with stack.client() as client:
        artifacts = artifacts_of(client, stack.retrain_run.id)
    summary = artifacts["ftflow-summary"]
    assert summary.type == "markdown" and summary.data.startswith(f"# {stack.retrain_run.name}")
    for section in ("**Outcome:** trained; ", "## Dataset", "## Fine-tuning job", "## Loss", "## Held-out evaluation",
                    "## Cost case", "## Links", "![loss per step](data:image/png;base64,", "| fact recall |",
                    "## Promotion gate", "| `antwort` | 0% [0%, 0%] |"):
        assert section in summary.data, section
    for plot in ("ftflow-plot-loss", "ftflow-plot-tokens", "ftflow-plot-eval-history"):
        image = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", artifacts[plot].data)
        assert image and base64.b64decode(image.group(1)).startswith(b"\x89PNG"), plot
    history = artifacts["ftflow-history"]
    assert history.type == "table"
    rows = history.data if isinstance(history.data, list) else json.loads(history.data)
    assert stack.retrain_run.name.endswith(rows[0]["run id"]) and rows[0]["outcome"] == "not promoted"


def test_no_task_has_subflow_inputs_the_default_ui_cannot_read(stack):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with stack.client() as client:
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[stack.retrain_run.id])))
    own = [t for t in task_runs if t.flow_run_id == stack.retrain_run.id]
    assert len(own) >= 8
    assert not [(t.name, name) for t in own for name, inputs in t.task_inputs.items()
                if any(i.input_type == "flow_run" for i in inputs)]


def deployment_view(client, name):
    deployment = client.read_deployment_by_name(name)
    return {
        "schedules": [(s.schedule.cron, s.schedule.timezone, s.active) for s in deployment.schedules],
        "parameters": deployment.parameters, "tags": sorted(deployment.tags),
        "concurrency": (deployment.global_concurrency_limit.limit if deployment.global_concurrency_limit else None,
                        deployment.concurrency_options.collision_strategy if deployment.concurrency_options else None),
        "entrypoint": deployment.entrypoint,
    }


def test_prefect_deploy_and_ftflow_serve_give_the_same_schedule_and_parameters(stack):
    from ftflow.deployments import load_deployments

    with stack.client() as client:
        deployed = {name: deployment_view(client, f"{name}/{name}") for name in ("retrain", "prepare", "finetune")}
        for name in deployed:  # gone, so that what follows comes from `ftflow serve` alone
            client.delete_deployment(client.read_deployment_by_name(f"{name}/{name}").id)
    assert deployed["retrain"]["schedules"] == [("0 3 * * 1", "Europe/Vienna", True)]
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: stack.api_url}):  # what `ftflow serve` registers, on this server
        for deployment in load_deployments():
            deployment.apply()
    with stack.client() as client:
        served = {name: deployment_view(client, f"{name}/{name}") for name in deployed}
    for name in deployed:
        expected, actual = deployed[name], served[name]
        assert actual["schedules"] == expected["schedules"], name
        assert actual["parameters"] == expected["parameters"], name
        assert actual["tags"] == expected["tags"], name
        assert actual["concurrency"] == expected["concurrency"] == (1, "ENQUEUE"), name
