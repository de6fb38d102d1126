"""boto3 drives AWS's dialect: S3 uploads, Bedrock customization jobs, deployments, converse, SigV4."""

from __future__ import annotations

import json
import time

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.conftest import training_bytes
from tests.integration.dialects import root

pytestmark = pytest.mark.service
NOVA = "amazon.nova-micro-v1:0:128k"
ROLE = "arn:aws:iam::000000000000:role/ftflow-bedrock"
STATES = {"InProgress", "Completed", "Failed", "Stopping", "Stopped"}


def aws(service, name: str, secret: str | None = None):
    prefix = {"s3": "s3", "bedrock": "bedrock", "bedrock-runtime": "bedrock-runtime"}[name]
    config = Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"})
    return boto3.client(name, endpoint_url=f"{root(service)}/{prefix}", region_name="us-east-1", config=config,
                        aws_access_key_id="AKIDFTFLOW", aws_secret_access_key=secret or service.api_key)


def nova_bytes(bad_turn: str | None = None) -> bytes:
    """The toy training data in bedrock-conversation-2024 (optionally one assistant turn replaced)."""
    lines = []
    for number, line in enumerate(training_bytes().decode().splitlines()):
        turns = [m for m in json.loads(line)["messages"] if m["role"] != "system"]
        record = {"schemaVersion": "bedrock-conversation-2024", "system": [{"text": "Antworte als JSON."}],
                  "messages": [{"role": m["role"], "content": [{"text": m["content"]}]} for m in turns]}
        if bad_turn and number == 3:
            record["messages"][-1]["content"][0]["text"] = bad_turn
        lines.append(json.dumps(record))
    return ("\n".join(lines) + "\n").encode()


def wait_job(bedrock, arn: str, until=("Completed", "Failed", "Stopped"), timeout: float = 30.0):
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        job = bedrock.get_model_customization_job(jobIdentifier=arn)
        if not seen or seen[-1] != job["status"]:
            seen.append(job["status"])
        if job["status"] in until:
            return job, seen
        assert time.monotonic() < deadline, seen
        time.sleep(0.05)


def create(bedrock, name: str, uri: str, token: str | None = None, model: str = NOVA) -> str:
    extra = {"clientRequestToken": token} if token else {}
    return bedrock.create_model_customization_job(
        jobName=name, customModelName=f"{name}-model", roleArn=ROLE, baseModelIdentifier=model,
        trainingDataConfig={"s3Uri": uri}, outputDataConfig={"s3Uri": "s3://ftflow/out/"},
        hyperParameters={"epochCount": "2"}, **extra)["jobArn"]


def test_s3_upload_list_get_and_multipart(local_service):
    s3 = aws(local_service, "s3")
    s3.create_bucket(Bucket="ftflow")
    s3.put_object(Bucket="ftflow", Key="data/train.jsonl", Body=nova_bytes())
    assert s3.get_object(Bucket="ftflow", Key="data/train.jsonl")["Body"].read() == nova_bytes()
    assert s3.head_object(Bucket="ftflow", Key="data/train.jsonl")["ContentLength"] == len(nova_bytes())
    upload = s3.create_multipart_upload(Bucket="ftflow", Key="data/big.jsonl")
    parts = [s3.upload_part(Bucket="ftflow", Key="data/big.jsonl", UploadId=upload["UploadId"], PartNumber=n,
                            Body=chunk)["ETag"] for n, chunk in ((1, b"a" * 10), (2, b"b" * 5))]
    done = s3.complete_multipart_upload(
        Bucket="ftflow", Key="data/big.jsonl", UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(parts, start=1)]})
    assert done["ETag"].endswith('-2"')
    assert s3.get_object(Bucket="ftflow", Key="data/big.jsonl")["Body"].read() == b"a" * 10 + b"b" * 5
    listed = s3.list_objects_v2(Bucket="ftflow", Prefix="data/")
    assert [o["Key"] for o in listed["Contents"]] == ["data/big.jsonl", "data/train.jsonl"]
    with pytest.raises(ClientError) as missing:
        s3.get_object(Bucket="ftflow", Key="data/none.jsonl")
    assert missing.value.response["Error"]["Code"] == "NoSuchKey"


def test_customization_job_once_per_token_completes_and_deploys(local_service):
    s3, bedrock, runtime = (aws(local_service, n) for n in ("s3", "bedrock", "bedrock-runtime"))
    s3.create_bucket(Bucket="ftflow")
    s3.put_object(Bucket="ftflow", Key="train.jsonl", Body=nova_bytes())
    first = create(bedrock, "alpenrad-1", "s3://ftflow/train.jsonl", token="key-0123456789")
    assert create(bedrock, "alpenrad-1", "s3://ftflow/train.jsonl", token="key-0123456789") == first
    assert len(bedrock.list_model_customization_jobs()["modelCustomizationJobSummaries"]) == 1
    with pytest.raises(ClientError) as taken:  # the name is taken; another token does not make a second job
        create(bedrock, "alpenrad-1", "s3://ftflow/train.jsonl", token="key-other")
    assert taken.value.response["Error"]["Code"] == "ConflictException"

    job, seen = wait_job(bedrock, first)
    assert job["status"] == "Completed" and set(seen) <= STATES and seen[0] == "InProgress"
    assert job["clientRequestToken"] == "key-0123456789" and job["outputModelArn"].endswith(job["jobArn"][-12:])
    model = job["outputModelArn"]

    question = [{"role": "user", "content": [{"text": "Frage 5: Wo ist Bestellung AR-5?"}]}]
    with pytest.raises(ClientError, match="custom model deployment"):  # no inference without a deployment
        runtime.converse(modelId=model, messages=question)
    deployment = bedrock.create_custom_model_deployment(modelDeploymentName="alpenrad-1", modelArn=model,
                                                        clientRequestToken="deploy-1")["customModelDeploymentArn"]
    assert bedrock.create_custom_model_deployment(modelDeploymentName="alpenrad-1", modelArn=model,
                                                  clientRequestToken="deploy-1")["customModelDeploymentArn"] == deployment
    deadline = time.monotonic() + 10
    while bedrock.get_custom_model_deployment(customModelDeploymentIdentifier=deployment)["status"] != "Active":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    reply = runtime.converse(modelId=deployment, messages=question)
    assert json.loads(reply["output"]["message"]["content"][0]["text"]) == {"antwort": "Bestellung AR-5 ist unterwegs"}
    assert reply["usage"]["inputTokens"] > 0 and reply["stopReason"] == "end_turn"
    base = runtime.converse(modelId=NOVA, messages=question)
    assert base["output"]["message"]["content"][0]["text"] != reply["output"]["message"]["content"][0]["text"]
    bedrock.delete_custom_model_deployment(customModelDeploymentIdentifier=deployment)
    assert bedrock.list_custom_model_deployments()["modelDeploymentSummaries"] == []


def test_nova_file_with_a_reserved_string_fails_naming_it(local_service):
    s3, bedrock = aws(local_service, "s3"), aws(local_service, "bedrock")
    s3.create_bucket(Bucket="ftflow")
    s3.put_object(Bucket="ftflow", Key="bad.jsonl", Body=nova_bytes(bad_turn="Bot: Bestellung ist unterwegs"))
    job, _ = wait_job(bedrock, create(bedrock, "bad-1", "s3://ftflow/bad.jsonl"))
    assert job["status"] == "Failed"
    assert job["failureMessage"] == "Line 4: the reserved string 'Bot:' is not allowed in the data."


def test_prompt_completion_for_text_models_and_stop(local_service):
    s3, bedrock = aws(local_service, "s3"), aws(local_service, "bedrock")
    local_service.service.aws.jobs.seconds_per_1k_tokens = 5.0
    s3.create_bucket(Bucket="ftflow")
    lines = [{"prompt": f"Wo ist AR-{i}?", "completion": f"AR-{i} ist unterwegs"} for i in range(12)]
    s3.put_object(Bucket="ftflow", Key="pc.jsonl", Body="\n".join(map(json.dumps, lines)).encode())
    arn = create(bedrock, "llama-1", "s3://ftflow/pc.jsonl", model="meta.llama3-1-8b-instruct-v1:0:128k")
    wait_job(bedrock, arn, until=("InProgress",))
    bedrock.stop_model_customization_job(jobIdentifier=arn)
    job, seen = wait_job(bedrock, arn, until=("Stopped",))
    assert seen[-1] == "Stopped" and set(seen) <= STATES
    with pytest.raises(ClientError) as again:
        bedrock.stop_model_customization_job(jobIdentifier=arn)
    assert again.value.response["Error"]["Code"] == "ValidationException"
    summary = bedrock.list_model_customization_jobs(statusEquals="Stopped")["modelCustomizationJobSummaries"]
    assert [s["jobArn"] for s in summary] == [arn]


@pytest.mark.parametrize("name", ["s3", "bedrock", "bedrock-runtime"])
def test_wrong_secret_is_refused_with_403_in_aws_format(local_service, name):
    client = aws(local_service, name, secret="not-the-key")
    call = {"s3": lambda: client.list_objects_v2(Bucket="ftflow"),
            "bedrock": lambda: client.list_model_customization_jobs(),
            "bedrock-runtime": lambda: client.converse(modelId=NOVA, messages=[{"role": "user",
                                                                                "content": [{"text": "hi"}]}])}[name]
    with pytest.raises(ClientError) as refused:
        call()
    error = refused.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert error["Error"]["Code"] == ("SignatureDoesNotMatch" if name == "s3" else "InvalidSignatureException")
    assert "signature we calculated does not match" in error["Error"]["Message"]


def shape(name: str) -> dict:
    """A shape of botocore's Bedrock service model as kept in tests/data/bedrock/."""
    from tests.conftest import ROOT

    return json.loads((ROOT / "tests/data/bedrock/botocore-1.44.18-bedrock.json").read_text())["bedrock"]["shapes"][name]


def test_job_shapes_follow_the_service_model_and_agree_with_moto(local_service, monkeypatch):
    """The emulator's job and summary carry the model's required members and nothing it lacks; moto, an
    independent emulator, agrees on the required members and on InProgress for a fresh job."""
    from moto import mock_aws

    s3, bedrock = aws(local_service, "s3"), aws(local_service, "bedrock")
    s3.create_bucket(Bucket="ftflow")
    s3.put_object(Bucket="ftflow", Key="train.jsonl", Body=nova_bytes())
    arn = create(bedrock, "shape-1", "s3://ftflow/train.jsonl", token="tok-1")
    ours, seen = wait_job(bedrock, arn)
    job, summary = shape("GetModelCustomizationJobResponse"), shape("ModelCustomizationJobSummary")
    ours.pop("ResponseMetadata")
    assert set(job["required"]) <= set(ours) <= set(job["members"])
    [listed] = bedrock.list_model_customization_jobs()["modelCustomizationJobSummaries"]
    assert set(summary["required"]) <= set(listed) <= set(summary["members"])
    assert set(seen) <= set(shape("ModelCustomizationJobStatus")["enum"])

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "moto")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "moto")
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="ftflow-data")
        moto = boto3.client("bedrock", region_name="us-east-1")
        moto.create_model_customization_job(
            jobName="shape-1", customModelName="shape-1-model", roleArn=ROLE, baseModelIdentifier=NOVA,
            trainingDataConfig={"s3Uri": "s3://ftflow-data/train.jsonl"},
            outputDataConfig={"s3Uri": "s3://ftflow-data/out/"}, clientRequestToken="tok-1")
        theirs = moto.get_model_customization_job(jobIdentifier="shape-1")  # moto 5.2 finds jobs by name only
        their_summary = moto.list_model_customization_jobs()["modelCustomizationJobSummaries"][0]
    assert theirs["status"] == seen[0] == "InProgress"
    # moto 5.2.6 leaves out validationDataConfig, which the service model requires: ours has all of them.
    assert set(job["required"]) & set(theirs) == set(job["required"]) - {"validationDataConfig"}
    assert set(summary["required"]) <= set(their_summary) & set(listed)


def test_injected_faults_speak_aws(local_service):
    """A 429 is Bedrock's ThrottlingException, S3's is a 503 SlowDown in XML; boto3 retries a 5xx by itself."""
    from tests.integration.test_service_faults import set_faults

    s3, bedrock = aws(local_service, "s3"), aws(local_service, "bedrock")
    s3.create_bucket(Bucket="ftflow")
    set_faults(local_service, {"bedrock.list_model_customization_jobs": {"rate_limit": 1.0, "retry_after": 0.01},
                               "s3.list_objects_v2": {"rate_limit": 1.0, "retry_after": 0.01}})
    with pytest.raises(ClientError) as throttled:
        bedrock.list_model_customization_jobs()
    assert throttled.value.response["Error"]["Code"] == "ThrottlingException"
    assert throttled.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    with pytest.raises(ClientError) as slow:
        s3.list_objects_v2(Bucket="ftflow")
    assert slow.value.response["Error"]["Code"] == "SlowDown"
    set_faults(local_service, {"s3.put_object": {"server_error": 1.0, "max_faults": 1}})
    retrying = boto3.client("s3", endpoint_url=f"{root(local_service)}/s3", region_name="us-east-1",
                            aws_access_key_id="AKIDFTFLOW", aws_secret_access_key=local_service.api_key,
                            config=Config(retries={"max_attempts": 3}, s3={"addressing_style": "path"}))
    retrying.put_object(Bucket="ftflow", Key="k", Body=b"x")
    assert local_service.service.faults.injected["s3.put_object:server_error"] == 1
    assert s3.get_object(Bucket="ftflow", Key="k")["Body"].read() == b"x"
