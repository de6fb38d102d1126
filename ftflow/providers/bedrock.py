"""AWS Bedrock model customization through `boto3`: data in S3, jobs on the `bedrock` control
plane, answers from the `bedrock-runtime` `converse` API.

Files: prepare's chat JSONL is rendered into the base model's format (ftflow/formats/bedrock.py:
Nova's `bedrock-conversation-2024`, or prompt/completion for Llama and Titan) and put to
`s3://<bedrock_bucket>/<bedrock_prefix><format>/ftflow-<sha256>.jsonl` (multipart above
`upload_part_bytes`); the file's id is its S3 URI. Jobs: `create_model_customization_job`
with `clientRequestToken` = the idempotency key (Bedrock returns the job it created for a token
it has seen) and the key in the job name, plus the ledger. States: `InProgress` -> running,
`Completed` -> succeeded, `Failed` -> failed, `Stopping` -> running, `Stopped` -> cancelled.
Bedrock has no DPO and no job events.

A custom model answers only through a deployment: `deploy_model` creates an on-demand custom
model deployment (its own task, as Azure's) and waits until it is `Active`. ftflow never buys
provisioned throughput (the hourly commitment behind surprise bills, aws-samples/
text-to-sql-bedrock-workshop#8). Credentials: the AWS default chain, or `bedrock_profile`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ftflow.errors import ConfigError, ProviderError, ProviderRefused
from ftflow.exactly_once import Outcome
from ftflow.formats.bedrock import format_for, render
from ftflow.providers.base import (
    ChatReply,
    FileState,
    JobEvent,
    JobSpec,
    JobState,
    Provider,
    RemoteFile,
    RemoteJob,
    UploadProgress,
    is_connection_error,
)

log = logging.getLogger("ftflow.providers.bedrock")
JOB_STATES: dict[str, JobState] = {"InProgress": "running", "Stopping": "running", "Completed": "succeeded",
                                   "Failed": "failed", "Stopped": "cancelled"}
NAME_LIMIT = 63  # jobName and customModelName: [a-zA-Z0-9](-*[a-zA-Z0-9+\-.]){0,62}
PROCESSED: FileState = "processed"


def aws_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return response.get("ResponseMetadata", {}).get("HTTPStatusCode") if isinstance(response, dict) else None


def aws_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    return response.get("Error", {}).get("Code") if isinstance(response, dict) else None


def aws_message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    return (response.get("Error", {}).get("Message") if isinstance(response, dict) else None) or str(exc)


def job_name(suffix: str | None, key: str) -> str:
    """`<suffix>-<key>`: the whole key, so the list can be searched for it (`nameContains`)."""
    room = NAME_LIMIT - len(key) - 1
    return f"{(suffix or 'ftflow')[:room].rstrip('-.+')}-{key}"


def base_model_id(model: str) -> str:
    """The id to converse with a base model: the customization id without its context variant
    (`amazon.nova-micro-v1:0:128k` -> `amazon.nova-micro-v1:0`)."""
    parts = model.split(":")
    return ":".join(parts[:2]) if len(parts) > 2 else model


@dataclass(frozen=True)
class BedrockChat:
    """Chat through `converse`: system messages go to `system`, the turns to `messages`."""

    runtime: Any
    name: str

    def ask(self, messages: list[dict[str, Any]], *, temperature: float = 0.0) -> ChatReply:
        system = [{"text": m["content"]} for m in messages if m["role"] == "system"]
        turns = [{"role": m["role"], "content": [{"text": m["content"]}]} for m in messages
                 if m["role"] in ("user", "assistant")]
        reply = self.runtime.converse(modelId=self.name, messages=turns, inferenceConfig={"temperature": temperature},
                                      **({"system": system} if system else {}))
        text = "".join(part.get("text", "") for part in reply["output"]["message"]["content"])
        return ChatReply(text, reply["usage"]["inputTokens"], reply["usage"]["outputTokens"])


class BedrockProvider(Provider):
    backend = "bedrock"
    key_home = "`clientRequestToken` (Bedrock's idempotency token) and the job name, plus the ledger"
    refusals: ClassVar[dict[str, str]] = {
        "AccessDeniedException": "AWS refused the request: the credentials may not use Bedrock model customization "
        "(or pass bedrock_role_arn)",
        "ServiceQuotaExceededException": "a Bedrock quota is reached (customization jobs or records); wait for "
        "running jobs or ask AWS for a higher quota",
        "UnrecognizedClientException": "AWS does not know these credentials",
    }

    def __init__(self, settings: Any, access_key: str, session: Any) -> None:
        super().__init__(settings, access_key)
        from botocore.config import Config

        def client(service: str, prefix: str, retries: int) -> Any:
            url = f"{settings.bedrock_endpoint_url.rstrip('/')}/{prefix}" if settings.bedrock_endpoint_url else None
            config = Config(retries={"max_attempts": retries, "mode": "standard"}, s3={"addressing_style": "path"},
                            connect_timeout=settings.request_timeout_seconds,
                            read_timeout=settings.request_timeout_seconds)
            return session.client(service, endpoint_url=url, config=config)

        self.s3 = client("s3", "s3", 3)
        self.bedrock = client("bedrock", "bedrock", 3)
        self.creator = client("bedrock", "bedrock", 1)  # creates: ftflow/exactly_once.py retries them
        self.runtime = client("bedrock-runtime", "bedrock-runtime", 3)
        self._tokens: dict[str, int] = {}  # job ARN -> trained tokens (counted once)

    @property
    def identity(self) -> str:
        where = self.settings.bedrock_endpoint_url or self.settings.bedrock_region
        return f"bedrock:{where}:s3://{self.settings.bedrock_bucket}/{self.settings.bedrock_prefix}"

    # --- files -----------------------------------------------------------------------------
    def _bucket(self) -> str:
        if not self.settings.bedrock_bucket:
            raise ConfigError("backend bedrock needs bedrock_bucket: the S3 bucket for training data")
        return self.settings.bedrock_bucket

    def _key(self, filename: str) -> str:
        return f"{self.settings.bedrock_prefix}{format_for(self.settings.model)}/{filename}"

    def _file(self, key: str, size: int | None) -> RemoteFile:
        return RemoteFile(id=f"s3://{self._bucket()}/{key}", filename=key.rsplit("/", 1)[-1], bytes=size,
                          state=PROCESSED, provider_status="stored")

    def upload_file(self, path: Path, filename: str, *, progress: UploadProgress) -> RemoteFile:
        """Render the chat file into the model's format, then put it (multipart above upload_part_bytes)."""
        with open(path, "rb") as f:
            content = render(f, format_for(self.settings.model))
        key, bucket, part = self._key(filename), self._bucket(), self.settings.upload_part_bytes
        if len(content) <= part:
            self.s3.put_object(Bucket=bucket, Key=key, Body=content,
                               Metadata={"ftflow-sha256": hashlib.sha256(content).hexdigest()})
            return self._file(key, len(content))
        upload = self.s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        parts = [{"PartNumber": n, "ETag": self.s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=n,
                                                                Body=content[start:start + part])["ETag"]}
                 for n, start in enumerate(range(0, len(content), part), start=1)]
        self.s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts})
        return self._file(key, len(content))

    def find_file(self, filename: str) -> RemoteFile | None:
        return self.get_file(f"s3://{self._bucket()}/{self._key(filename)}")

    def get_file(self, file_id: str) -> RemoteFile | None:
        """The object, if it exists and is in the current model's format (another format: another object)."""
        from botocore.exceptions import ClientError

        bucket, _, key = file_id.removeprefix("s3://").partition("/")
        if key != self._key(key.rsplit("/", 1)[-1]):
            return None
        try:
            head = self.s3.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if aws_status(exc) == 404:
                return None
            raise
        return self._file(key, head["ContentLength"])

    def file_text(self, file_id: str) -> str:
        bucket, _, key = file_id.removeprefix("s3://").partition("/")
        return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8")

    # --- jobs ------------------------------------------------------------------------------
    def _job(self, job: dict[str, Any]) -> RemoteJob:
        status = job["status"]
        epochs = (job.get("hyperParameters") or {}).get("epochCount")
        end, start = job.get("endTime"), job.get("creationTime")
        return RemoteJob(
            id=job["jobArn"], state=JOB_STATES.get(status, "pending"), provider_status=status,
            model=job.get("baseModelArn", "").rsplit("/", 1)[-1] or None,
            fine_tuned_model=job.get("outputModelArn") if status == "Completed" else None,
            trained_tokens=self._trained_tokens(job) if status == "Completed" else None,
            hyperparameters={"n_epochs": int(epochs)} if epochs else {},
            error_code="Failed" if status == "Failed" else None,
            error_message=job.get("failureMessage") if status == "Failed" else None,
            key=job.get("clientRequestToken"),
            duration_seconds=(end - start).total_seconds() if end and start else None)

    def _trained_tokens(self, job: dict[str, Any]) -> int:
        """Bedrock reports no token count: the training data's text tokens (ftflow's encoding of the base
        model, an approximation of Bedrock's) times the epochs, which is what Bedrock bills."""
        if job["jobArn"] not in self._tokens:
            from ftflow.encodings import encoding_name_for_model, get_encoding

            encoding = get_encoding(encoding_name_for_model(job["baseModelArn"].rsplit("/", 1)[-1]))
            text = self.file_text(job["trainingDataConfig"]["s3Uri"])
            tokens = sum(len(encoding.encode_ordinary(t)) for line in text.splitlines() if line.strip()
                         for t in _texts(json.loads(line)))
            self._tokens[job["jobArn"]] = tokens * int((job.get("hyperParameters") or {}).get("epochCount", 1))
        return self._tokens[job["jobArn"]]

    def create_job(self, spec: JobSpec) -> RemoteJob:
        if spec.method != "supervised":
            raise ConfigError(f"Bedrock has no {spec.method} customization (only supervised fine-tuning); "
                              "use --backend fireworks, together or azure for DPO")
        if not self.settings.bedrock_role_arn:
            raise ConfigError("backend bedrock needs bedrock_role_arn: the IAM role Bedrock assumes to read S3")
        name = job_name(spec.suffix, spec.key)
        arguments: dict[str, Any] = {
            "jobName": name, "customModelName": name, "roleArn": self.settings.bedrock_role_arn,
            "clientRequestToken": spec.key, "baseModelIdentifier": spec.model, "customizationType": "FINE_TUNING",
            "trainingDataConfig": {"s3Uri": spec.training_file},
            "outputDataConfig": {"s3Uri": f"s3://{self._bucket()}/{self.settings.bedrock_prefix}output/"},
            "hyperParameters": {"epochCount": str(spec.hyperparameters["n_epochs"])}
            if "n_epochs" in spec.hyperparameters else {},
        }
        if spec.validation_file:
            arguments["validationDataConfig"] = {"validators": [{"s3Uri": spec.validation_file}]}
        answer = self.creator.create_model_customization_job(**arguments)
        if "jobArn" not in answer:  # botocore parses a cut-off body into {"message": <the fragment>}
            raise LostAnswer(f"Bedrock's answer to creating job {name} was cut off: {answer}")
        return self._job(self.bedrock.get_model_customization_job(jobIdentifier=answer["jobArn"]))

    def list_jobs(self, key: str) -> list[RemoteJob]:
        found = self.bedrock.list_model_customization_jobs(nameContains=key)["modelCustomizationJobSummaries"]
        return [self._job(self.bedrock.get_model_customization_job(jobIdentifier=s["jobArn"])) for s in found]

    def get_job(self, job_id: str) -> RemoteJob | None:
        from botocore.exceptions import ClientError

        try:
            return self._job(self.bedrock.get_model_customization_job(jobIdentifier=job_id))
        except ClientError as exc:
            if aws_code(exc) == "ResourceNotFoundException":
                return None
            raise

    def list_events(self, job_id: str) -> Iterator[JobEvent]:
        """Bedrock keeps no job events (its metrics go to the output S3 prefix)."""
        return iter(())

    def cancel_job(self, job_id: str) -> None:
        self.bedrock.stop_model_customization_job(jobIdentifier=job_id)

    # --- serving ---------------------------------------------------------------------------
    def deploy_model(self, model: str, name: str) -> str:
        """Create an on-demand custom model deployment (token: its name) and wait until it is Active;
        returns its ARN, the model id to converse with."""
        arn = self.bedrock.create_custom_model_deployment(
            modelDeploymentName=name, modelArn=model, clientRequestToken=name,
            description="ftflow: on-demand inference for evaluation and serving")["customModelDeploymentArn"]
        deadline = time.monotonic() + self.settings.deploy_timeout_seconds
        while True:
            status = self.bedrock.get_custom_model_deployment(customModelDeploymentIdentifier=arn)["status"]
            if status == "Active":
                log.info("deployment %s of %s is active", name, model)
                return arn
            if status == "Failed":
                raise ProviderError(f"Bedrock deployment {name} of {model} failed")
            if time.monotonic() > deadline:
                raise ProviderError(f"Bedrock deployment {name} of {model} was not Active within "
                                    f"{self.settings.deploy_timeout_seconds:.0f}s (status {status})")
            time.sleep(self.settings.poll_initial_seconds)

    def remove_deployment(self, name: str) -> None:
        """Delete the deployment; one already gone is fine."""
        from botocore.exceptions import ClientError

        try:
            self.bedrock.delete_custom_model_deployment(customModelDeploymentIdentifier=name)
        except ClientError as exc:
            if aws_code(exc) != "ResourceNotFoundException":
                raise

    def served_as(self, model: str) -> str:
        return base_model_id(model)

    def chat_client(self) -> Any:
        raise ConfigError("Bedrock models answer through converse, not chat completions: use Provider.chat")

    def chat(self, name: str, *, max_retries: int = 5) -> BedrockChat:
        return BedrockChat(self.runtime, name)

    # --- errors ----------------------------------------------------------------------------
    def outcome(self, exc: BaseException) -> Outcome:
        status = aws_status(exc)
        if self.refusal(exc) is not None:
            return "permanent"
        if status is None:
            lost = isinstance(exc, LostAnswer) or is_connection_error(exc) or _botocore_connection(exc)
            return "unknown" if lost else "permanent"
        if status == 429 or aws_code(exc) == "ThrottlingException":
            return "not_done"
        return "unknown" if status >= 500 else "permanent"

    def refusal(self, exc: BaseException) -> ProviderRefused | None:
        code, status = aws_code(exc), aws_status(exc)
        if code in self.refusals:
            return ProviderRefused(f"{self.refusals[code]} (provider said: {aws_message(exc)})")
        if code == "ValidationException" and "does not support customization" in aws_message(exc):
            return ProviderRefused(f"Bedrock cannot customize this model in {self.settings.bedrock_region}; pick "
                                   f"another --model (provider said: {aws_message(exc)})")
        if status == 403:
            return ProviderRefused(f"AWS refused the request (403 {code}): {aws_message(exc)}")
        return None


class LostAnswer(ProviderError):
    """A create whose answer did not arrive whole: it may have been carried out (looked up by its key)."""


def _texts(record: Any) -> Iterator[str]:
    """The text of a training record (every string but the schema version)."""
    if isinstance(record, str):
        yield record
    elif isinstance(record, list):
        for item in record:
            yield from _texts(item)
    elif isinstance(record, dict):
        for name, value in record.items():
            if name not in ("schemaVersion", "role"):
                yield from _texts(value)


def _botocore_connection(exc: BaseException) -> bool:
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import ReadTimeoutError

    return isinstance(exc, BotoConnectionError | ReadTimeoutError)
