"""retrain end to end in each dialect of the local service, and a migration scored fairly.

Each run goes through ftflow's provider seam with the provider's official SDK: `openai`
(local), `AzureOpenAI` (Azure dated), `OpenAI(base_url=.../openai/v1/)` (Azure v1), `together`.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from flows.retrain import retrain
from ftflow.cli import app
from ftflow.store.ledger import Ledger
from ftflow.store.lineage import LineageStore
from tests.conftest import ROOT, chat, write_jsonl
from tests.integration.dialects import ACCOUNT, root

pytestmark = [pytest.mark.flow, pytest.mark.service]
SAMPLES = [str(ROOT / "data/raw/*")]
PROMPT = "Du bist der Alpenrad-Support."
LLAMA = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
NOVA = "amazon.nova-micro-v1:0:128k"
FIREWORKS_LLAMA = "accounts/fireworks/models/llama-v3p1-8b-instruct"


@pytest.fixture
def env(local_service, tmp_path, monkeypatch):
    """Every backend pointed at the one local service (each dialect under its own path)."""
    key, url = local_service.api_key, root(local_service)
    for name, value in {
        "FTFLOW_SERVICE_URL": local_service.base_url, "FTFLOW_SERVICE_API_KEY": key,
        "FTFLOW_REGISTRY_URL": f"sqlite:///{tmp_path / 'registry.sqlite3'}",
        "FTFLOW_POLL_INITIAL_SECONDS": "0.05", "FTFLOW_POLL_MAX_SECONDS": "0.2",
        "AZURE_OPENAI_API_KEY": key, "FTFLOW_AZURE_ENDPOINT": url, "FTFLOW_AZURE_API_VERSION": "2024-10-21",
        "FTFLOW_AZURE_SUBSCRIPTION_ID": "sub-1", "FTFLOW_AZURE_RESOURCE_GROUP": "rg-1",
        "FTFLOW_AZURE_ACCOUNT": "acct-1", "FTFLOW_AZURE_MANAGEMENT_URL": url, "AZURE_MANAGEMENT_TOKEN": key,
        "FTFLOW_AZURE_DEPLOYMENT_SKU": "Standard", "FTFLOW_AZURE_BASELINE_DEPLOYMENT": "gpt-4o-mini-base",
        "FTFLOW_DEPLOY_TIMEOUT_SECONDS": "60",
        "TOGETHER_API_KEY": key, "FTFLOW_TOGETHER_BASE_URL": f"{url}/together",
        "AWS_ACCESS_KEY_ID": "AKIDFTFLOW", "AWS_SECRET_ACCESS_KEY": key, "FTFLOW_BEDROCK_ENDPOINT_URL": url,
        "FTFLOW_BEDROCK_BUCKET": "ftflow-data", "FTFLOW_BEDROCK_ROLE_ARN": "arn:aws:iam::000000000000:role/ftflow",
        "FIREWORKS_API_KEY": key, "FTFLOW_FIREWORKS_BASE_URL": f"{url}/fireworks", "FTFLOW_FIREWORKS_ACCOUNT": "acme",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws"),
    }.items():
        monkeypatch.setenv(name, value)
    return local_service


def deploy_baseline(service) -> None:
    """The base model's deployment a team already has (the baseline answers through it)."""
    import time

    import httpx

    url = f"{root(service)}{ACCOUNT}/deployments/gpt-4o-mini-base"
    auth = {"params": {"api-version": "2024-10-01"}, "headers": {"Authorization": f"Bearer {service.api_key}"},
            "timeout": 60}
    body = {"sku": {"name": "Standard", "capacity": 1},
            "properties": {"model": {"format": "OpenAI", "name": "gpt-4o-mini", "version": "2024-07-18"}}}
    assert httpx.put(url, json=body, **auth).status_code in (200, 201)
    deadline = time.monotonic() + 60
    while httpx.get(url, **auth).json()["properties"]["provisioningState"] != "Succeeded":
        assert time.monotonic() < deadline, "the baseline deployment never succeeded"
        time.sleep(0.05)


def registry_row(tmp_path, run_id: str) -> dict:
    return next(r for r in LineageStore(f"sqlite:///{tmp_path / 'registry.sqlite3'}").list_runs()
                if r["run_id"] == run_id)


def promote_by_hand(tmp_path, record: dict) -> None:
    """Promote a run's model as the gate would have: the sample data's fine-tuned model states other customers'
    order numbers, so the fact-recall criterion refuses it (tests/integration/test_retrain_flow.py shows that)."""
    assert not record["promoted"] and "fact_recall" in record["promotion"]["reasons"][0]
    url = f"sqlite:///{tmp_path / 'registry.sqlite3'}"
    LineageStore(url).promote(record["base_model"], record["fine_tuned_model"], record["run_id"],
                              backend=record["backend"], deployment=Ledger(url).newest_deployment(record["fine_tuned_model"]))


@pytest.mark.parametrize("surface", ["v1", "dated"])
def test_retrain_on_azure_deploys_and_evaluates_through_the_deployment(prefect_server, env, tmp_path, monkeypatch,
                                                                       surface):
    monkeypatch.setenv("FTFLOW_AZURE_SURFACE", surface)
    deploy_baseline(env)
    record = retrain(SAMPLES, overrides={"runs_dir": str(tmp_path / "runs"), "system_prompt": PROMPT, "backend": "azure"})
    assert record["status"] == "succeeded" and ".ft-" in record["fine_tuned_model"]
    assert record["evaluation"]["candidate"]["examples"] > 0
    assert record["evaluation"]["candidate"]["f1"] > record["evaluation"]["baseline"]["f1"]
    assert registry_row(tmp_path, record["run_id"])["backend"] == "azure"
    # Not promoted (fact recall, see promote_by_hand): its deployment, named from the run's key, is
    # removed rather than left billing by the hour.
    assert not record["promoted"]
    assert [name[:7] for name in record["deployments_removed"]] == ["ftflow-"]


def test_three_promoted_azure_runs_leave_two_deployments_and_show_the_hosting_cost(prefect_server, env, tmp_path):
    """keep_deployments = 2: the promoted model's deployment and the previous promoted one's stay; the
    first run's is removed (Azure bills each by the hour), and the cost case counts the hosting fee."""
    import asyncio

    import httpx
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    deploy_baseline(env)
    # Canned answers that name nothing from the question: no grounded facts, so the over-fitted
    # simulator's answers are right and each run is promoted (on the sample data fact recall stops it).
    canned = [chat(f"{greeting}, {question}", '{"antwort": "Danke, das klären wir sofort für dich.", "intent": "status"}')
              for greeting in ("Hallo", "Servus", "Grüezi", "Moin", "Guten Tag")
              for question in ("wo bleibt mein Rad?", "wann kommt die Lieferung?", "ist das Paket unterwegs?",
                               "gibt es Neuigkeiten zum Versand?", "wie lange dauert es noch?",
                               "hat sich etwas getan?", "wann darf ich mit dem Rad rechnen?",
                               "ist meine Bestellung schon raus?")]
    sources = [str(write_jsonl(tmp_path / "canned.jsonl", canned))]
    ledger = Ledger(f"sqlite:///{tmp_path / 'registry.sqlite3'}")
    records, made = [], []
    for _ in range(3):
        record = retrain(sources, overrides={"runs_dir": str(tmp_path / "runs"), "system_prompt": PROMPT,
                                             "backend": "azure"}, force=True)
        assert record["status"] == "succeeded" and record["promoted"], record.get("promotion")
        records.append(record)
        made.append(next(d["deployment"] for d in ledger.list_deployments()
                         if d["model"] == record["fine_tuned_model"]))
    assert records[0]["deployments_removed"] == records[1]["deployments_removed"] == []
    assert records[2]["deployments_removed"] == [made[0]]
    assert [d["deployment"] for d in ledger.list_deployments()] == made[1:]
    at_azure = httpx.get(f"{root(env)}{ACCOUNT}/deployments", params={"api-version": "2024-10-01"},
                         headers={"Authorization": f"Bearer {env.api_key}"}).json()["value"]
    assert sorted(d["name"] for d in at_azure) == sorted(["gpt-4o-mini-base", *made[1:]])

    economics = records[2]["economics"]
    assert economics["hosting_usd_per_month"] == 1241.0  # $1.70 an hour x 730 hours (price table)
    assert economics["monthly_cost_after_usd"] > 1241.0

    async def summary() -> str:
        async with get_client() as client:
            [found] = await client.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["ftflow-summary"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[records[2]["flow_run_id"]])))
            return found.data

    text = asyncio.run(summary())
    assert "| hosting the deployed model | $1,241.00 per month (in the saving) |" in text
    assert f"Removed deployments, neither promoted nor the previous promoted model: `{made[0]}`." in text

    listed = CliRunner().invoke(app, ["deployments"], terminal_width=250)
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert any(made[2] in line and "promoted" in line and "previous" not in line and "$1,241.00" in line
               for line in lines), listed.output
    assert any(made[1] in line and "previous promoted" in line for line in lines), listed.output
    assert made[0] not in listed.output and "2 deployments, $2,482.00 per month to host" in listed.output


def test_retrain_on_together_then_a_migration_is_scored_through_each_models_own_backend(prefect_server, env,
                                                                                         tmp_path):
    """Promote a local (OpenAI-dialect) model, then retrain on Together: the incumbent answers through local."""
    runs = str(tmp_path / "runs")
    first = retrain(SAMPLES, overrides={"runs_dir": runs, "system_prompt": PROMPT})
    assert first["backend"] == "local"
    promote_by_hand(tmp_path, first)
    snapshot = CliRunner().invoke(app, ["snapshot-eval"])
    assert snapshot.exit_code == 0, snapshot.output
    snap_files = list((tmp_path / "runs" / first["run_id"]).glob("snapshot-*.json"))
    assert len(snap_files) == 1 and json.loads(snap_files[0].read_text())["metrics"]["examples"] > 0
    assert f"written to {snap_files[0]}" in " ".join(snapshot.output.split())

    second = retrain(SAMPLES, overrides={"runs_dir": runs, "system_prompt": PROMPT, "backend": "together", "model": LLAMA})
    assert second["status"] == "succeeded" and second["backend"] == "together"
    models = second["evaluation"]
    assert models["current"]["model"] == first["fine_tuned_model"]
    assert models["candidate"]["model"].startswith("ftflow-local/Meta-Llama-3.1-8B-Instruct-Reference-ftflow-")
    # Same held-out examples for both, each model asked on its own backend.
    evaluation = json.loads((tmp_path / "runs" / second["run_id"] / "eval.json").read_text())
    assert len(evaluation["per_example"]["current"]) == len(evaluation["per_example"]["candidate"]) > 0
    assert [e["reference"] for e in evaluation["per_example"]["current"]] == \
        [e["reference"] for e in evaluation["per_example"]["candidate"]]
    assert models["current"]["f1"] > 0.5  # the incumbent really answered (through local, not Together)
    assert registry_row(tmp_path, second["run_id"])["backend"] == "together"
    backends = {r["run_id"]: r["backend"] for r in LineageStore(f"sqlite:///{tmp_path / 'registry.sqlite3'}").list_runs()}
    assert backends == {first["run_id"]: "local", second["run_id"]: "together"}


def test_retrain_on_bedrock_trains_nova_deploys_on_demand_and_scores_the_incumbent_on_its_backend(
        prefect_server, env, tmp_path):
    """Promote a local model, then retrain on Bedrock (Nova): the data goes to S3 as bedrock-conversation-2024,
    one job per clientRequestToken, an on-demand deployment answers converse, the incumbent answers through local."""
    from tests.integration.test_dialect_bedrock import aws

    s3 = aws(env, "s3")
    s3.create_bucket(Bucket="ftflow-data")
    runs = str(tmp_path / "runs")
    first = retrain(SAMPLES, overrides={"runs_dir": runs, "system_prompt": PROMPT})
    promote_by_hand(tmp_path, first)

    second = retrain(SAMPLES, overrides={"runs_dir": runs, "system_prompt": PROMPT, "backend": "bedrock",
                                         "model": NOVA})
    assert second["status"] == "succeeded" and second["backend"] == "bedrock"
    assert ":custom-model/amazon.nova-micro-v1:0:128k/" in second["fine_tuned_model"]
    models = second["evaluation"]
    assert models["current"]["model"] == first["fine_tuned_model"] and models["current"]["f1"] > 0.5
    assert models["candidate"]["examples"] == models["current"]["examples"] > 0
    assert models["candidate"]["f1"] > models["baseline"]["f1"]
    assert "promotion" in second and registry_row(tmp_path, second["run_id"])["backend"] == "bedrock"

    objects = [o["Key"] for o in s3.list_objects_v2(Bucket="ftflow-data", Prefix="ftflow/")["Contents"]]
    assert objects and all(k.startswith("ftflow/conversation/ftflow-") for k in objects)
    record = json.loads(s3.get_object(Bucket="ftflow-data", Key=objects[0])["Body"].read().splitlines()[0])
    assert record["schemaVersion"] == "bedrock-conversation-2024"
    jobs = aws(env, "bedrock").list_model_customization_jobs()["modelCustomizationJobSummaries"]
    assert len(jobs) == 1
    deployments = aws(env, "bedrock").list_custom_model_deployments()["modelDeploymentSummaries"]
    assert [d["modelArn"] for d in deployments] in ([second["fine_tuned_model"]], [])  # removed unless promoted


def test_retrain_on_fireworks_makes_one_dataset_per_content_and_one_job_per_key(prefect_server, env, tmp_path):
    """Promote a local model, then retrain on Fireworks: OpenAI-format datasets, one job whose id is the key."""
    from tests.integration.dialects import fireworks_client

    runs = str(tmp_path / "runs")
    first = retrain(SAMPLES, overrides={"runs_dir": runs, "system_prompt": PROMPT})
    promote_by_hand(tmp_path, first)
    overrides = {"runs_dir": runs, "system_prompt": PROMPT, "backend": "fireworks", "model": FIREWORKS_LLAMA}
    second = retrain(SAMPLES, overrides=overrides)
    assert second["status"] == "succeeded" and second["backend"] == "fireworks"
    assert second["fine_tuned_model"].startswith("accounts/acme/models/llama-v3p1-8b-instruct-")
    models = second["evaluation"]
    assert models["current"]["model"] == first["fine_tuned_model"] and models["current"]["f1"] > 0.5
    assert models["candidate"]["examples"] == models["current"]["examples"] > 0
    assert models["candidate"]["f1"] > models["baseline"]["f1"]
    assert "promotion" in second and registry_row(tmp_path, second["run_id"])["backend"] == "fireworks"

    client = fireworks_client(env)
    client.account_id = "acme"
    jobs = client.supervised_fine_tuning_jobs.list().supervised_fine_tuning_jobs
    assert len(jobs) == 1 and jobs[0].name.rsplit("/", 1)[-1].startswith("ftflow-")
    assert len(client.datasets.list().datasets) == 2  # train and validation
