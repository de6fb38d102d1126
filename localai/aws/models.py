"""The emulated AWS account: S3 buckets and objects, Bedrock customization jobs and deployments.

Shapes follow botocore's service models (excerpt and source in tests/data/bedrock/):

- S3: buckets and objects addressed path-style; multipart uploads keep their parts until
  completed; ETags are the MD5 of the object (of the parts' MD5s, `-N`, after multipart).
- Bedrock customization jobs: `InProgress` (validating, queued, training), `Completed`,
  `Failed` (with `failureMessage`), `Stopping` right after a stop, then `Stopped`. A
  `clientRequestToken` seen before returns the job it created, whatever else the request says.
  The training data is read from S3 when the job is created: Nova models take
  `bedrock-conversation-2024` records (the first turn user, the last assistant, no reserved
  strings: a job with them fails naming the string and line), the text models `{"prompt",
  "completion"}`. Either is trained on the shared engine as chat under a stand-in model.
- Custom model deployments (on-demand inference): `Creating`, then `Active`; `converse` answers
  on a deployment's ARN, on a base model id, never on a custom model's ARN alone (that needs a
  deployment or provisioned throughput, which is not emulated).
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime
from typing import Any

from localai.common import new_id
from localai.config import ServiceConfig
from localai.engine.chat import ChatBackend
from localai.engine.files import FilesBackend
from localai.engine.jobs import JobsBackend
from localai.engine.models import ModelsBackend
from localai.store import Store

from .exceptions import AwsError, conflict, not_found, s3_error, validation

ACCOUNT = "000000000000"
REGION = "us-east-1"
STAND_IN = "gpt-4.1-mini-2025-04-14"
SCHEMA_VERSION = "bedrock-conversation-2024"
RESERVED = ("User:", "Bot:", "Assistant:", "System:", "<image>", "<video>", "[EOS]")
# Base models this account can customize; True: Nova's conversation format, False: prompt/completion.
BASE_MODELS = {
    "amazon.nova-micro-v1:0:128k": True,
    "amazon.nova-lite-v1:0:300k": True,
    "amazon.nova-pro-v1:0:300k": True,
    "meta.llama3-1-8b-instruct-v1:0:128k": False,
    "meta.llama3-2-1b-instruct-v1:0:128k": False,
    "amazon.titan-text-express-v1:0:8k": False,
}
STATUS = {"validating_files": "InProgress", "queued": "InProgress", "running": "InProgress", "paused": "InProgress",
          "succeeded": "Completed", "failed": "Failed", "cancelled": "Stopped"}


def iso(timestamp: float | None) -> str | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def arn(resource: str) -> str:
    return f"arn:aws:bedrock:{REGION}:{ACCOUNT}:{resource}"


def s3_location(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise validation(f"{uri} is not a valid S3 URI (s3://bucket/key).")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def nova_to_chat(line: int, record: Any) -> tuple[dict[str, Any] | None, str | None]:
    """One `bedrock-conversation-2024` record as chat, or why Bedrock fails the job on it."""
    if not isinstance(record, dict) or record.get("schemaVersion") != SCHEMA_VERSION:
        return None, f"Line {line}: schemaVersion must be {SCHEMA_VERSION}."
    turns = record.get("messages")
    if not isinstance(turns, list) or not turns:
        return None, f"Line {line}: messages must be a non-empty list."
    chat: list[dict[str, str]] = []
    system = " ".join(part.get("text", "") for part in record.get("system") or [] if isinstance(part, dict))
    if system:
        chat.append({"role": "system", "content": system})
    for turn in turns:
        text = "".join(p.get("text", "") for p in (turn.get("content") or []) if isinstance(p, dict)) \
            if isinstance(turn, dict) else ""
        if not isinstance(turn, dict) or turn.get("role") not in ("user", "assistant") or not text:
            return None, f"Line {line}: every message needs a role user or assistant and text content."
        chat.append({"role": turn["role"], "content": text})
    for text in [system] + [m["content"] for m in chat]:
        if found := next((r for r in RESERVED if r in text), None):
            return None, f"Line {line}: the reserved string '{found}' is not allowed in the data."
    if turns[0]["role"] != "user" or turns[-1]["role"] != "assistant":
        return None, f"Line {line}: the first message must be from the user and the last from the assistant."
    return {"messages": chat}, None


def text_to_chat(line: int, record: Any) -> tuple[dict[str, Any] | None, str | None]:
    """One `{"prompt", "completion"}` record as chat, or why Bedrock fails the job on it."""
    if not isinstance(record, dict) or not isinstance(record.get("prompt"), str) \
            or not isinstance(record.get("completion"), str) or not record["completion"]:
        return None, f"Line {line}: records must follow the {{\"prompt\": ..., \"completion\": ...}} format."
    return {"messages": [{"role": "user", "content": record["prompt"]},
                         {"role": "assistant", "content": record["completion"]}]}, None


def as_chat(content: bytes, nova: bool) -> tuple[bytes, str | None]:
    """The training data as chat JSONL for the engine, or the first reason Bedrock fails it."""
    out = []
    for number, raw in enumerate(content.decode("utf-8", errors="replace").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError:
            return b"", f"Line {number}: not valid JSON."
        chat, reason = (nova_to_chat if nova else text_to_chat)(number, record)
        if reason:
            return b"", reason
        out.append(json.dumps(chat))
    return ("\n".join(out) + "\n").encode(), None


class AwsBackend:
    """State of the emulated AWS account."""

    def __init__(self, config: ServiceConfig) -> None:
        self.store = Store(config.data_dir / "aws")
        self.secret = config.api_key or ""
        self.files = FilesBackend(self.store, config.max_file_bytes)
        self.models = ModelsBackend(self.store)
        self.jobs = JobsBackend(self.store, self.files, self.models, seconds_per_1k_tokens=config.seconds_per_1k_tokens)
        self.chat = ChatBackend(self.store, self.models, instruction_following=config.instruction_following)
        self.stopping_seconds = 0.1
        self.deploy_seconds = 0.1


    # --- S3 ------------------------------------------------------------------------------------

    def create_bucket(self, bucket: str) -> None:
        if self.store.get("s3.bucket", bucket) is not None:
            raise s3_error(409, "BucketAlreadyOwnedByYou",
                           "Your previous request to create the named bucket succeeded and you already own it.",
                           BucketName=bucket)
        self.store.put("s3.bucket", {"id": bucket, "created": time.time()})

    def bucket(self, bucket: str) -> dict[str, Any]:
        found = self.store.get("s3.bucket", bucket)
        if found is None:
            raise s3_error(404, "NoSuchBucket", "The specified bucket does not exist", BucketName=bucket)
        return found

    def put_object(self, bucket: str, key: str, content: bytes, etag: str | None = None) -> str:
        self.bucket(bucket)
        blob = new_id("s3-")
        self.store.blob_path(blob).write_bytes(content)
        etag = etag or hashlib.md5(content).hexdigest()  # noqa: S324 - S3's ETag is an MD5, not a safeguard
        old = self.store.get("s3.object", f"{bucket}/{key}")
        self.store.put("s3.object", {"id": f"{bucket}/{key}", "key": key, "size": len(content), "etag": etag,
                                     "modified": time.time(), "_blob": blob}, parent=bucket)
        if old:
            self.store.blob_path(old["_blob"]).unlink(missing_ok=True)
        return etag

    def get_object(self, bucket: str, key: str) -> tuple[dict[str, Any], bytes]:
        self.bucket(bucket)
        found = self.store.get("s3.object", f"{bucket}/{key}")
        if found is None:
            raise s3_error(404, "NoSuchKey", "The specified key does not exist.", Key=key)
        return found, self.store.blob_path(found["_blob"]).read_bytes()

    def list_objects(self, bucket: str, prefix: str) -> list[dict[str, Any]]:
        self.bucket(bucket)
        return sorted((o for o in self.store.list("s3.object", parent=bucket) if o["key"].startswith(prefix)),
                      key=lambda o: o["key"])

    def create_multipart(self, bucket: str, key: str) -> str:
        self.bucket(bucket)
        upload = self.store.put("s3.upload", {"id": new_id("", 32), "bucket": bucket, "key": key}, parent=bucket)
        return upload["id"]

    def _upload(self, upload_id: str) -> dict[str, Any]:
        found = self.store.get("s3.upload", upload_id)
        if found is None:
            raise s3_error(404, "NoSuchUpload", "The specified upload does not exist. The upload ID may be invalid, "
                           "or the upload may have been aborted or completed.", UploadId=upload_id)
        return found

    def upload_part(self, upload_id: str, number: int, content: bytes) -> str:
        self._upload(upload_id)
        if not 1 <= number <= 10_000:
            raise s3_error(400, "InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive")
        etag = hashlib.md5(content).hexdigest()  # noqa: S324
        blob = f"part-{upload_id}-{number}"
        self.store.blob_path(blob).write_bytes(content)
        self.store.put("s3.part", {"id": blob, "number": number, "etag": etag}, parent=upload_id)
        return etag

    def complete_multipart(self, upload_id: str, parts: list[tuple[int, str]]) -> str:
        upload = self._upload(upload_id)
        stored = {p["number"]: p for p in self.store.list("s3.part", parent=upload_id)}
        if [n for n, _ in parts] != sorted(n for n, _ in parts) or not parts:
            raise s3_error(400, "InvalidPartOrder", "The list of parts was not in ascending order. "
                           "Parts must be ordered by part number.")
        chunks, digests = [], b""
        for number, etag in parts:
            part = stored.get(number)
            if part is None or part["etag"] != etag.strip('"'):
                raise s3_error(400, "InvalidPart", "One or more of the specified parts could not be found. "
                               "The part may not have been uploaded, or the specified entity tag may not match "
                               "the part's entity tag.")
            chunks.append(self.store.blob_path(part["id"]).read_bytes())
            digests += bytes.fromhex(part["etag"])
        etag = f"{hashlib.md5(digests).hexdigest()}-{len(parts)}"  # noqa: S324
        self.put_object(upload["bucket"], upload["key"], b"".join(chunks), etag)
        for part in stored.values():
            self.store.blob_path(part["id"]).unlink(missing_ok=True)
            self.store.delete("s3.part", part["id"])
        self.store.delete("s3.upload", upload_id)
        return etag

    # --- Bedrock customization jobs -------------------------------------------------------------

    def create_job(self, body: dict[str, Any]) -> dict[str, Any]:
        token = body.get("clientRequestToken")
        if token:
            for known in self.store.list("bedrock.job"):
                if known.get("clientRequestToken") == token:
                    return {"jobArn": known["jobArn"]}
        for name in ("jobName", "customModelName", "roleArn", "baseModelIdentifier"):
            if not isinstance(body.get(name), str) or not body[name]:
                raise validation(f"1 validation error detected: Value at '{name}' failed to satisfy constraint: "
                                 "Member must not be null")
        base = body["baseModelIdentifier"].split("/")[-1]
        if base not in BASE_MODELS:
            raise validation(f"The base model {body['baseModelIdentifier']} does not support customization "
                             "in this Region.")
        kind = body.get("customizationType", "FINE_TUNING")
        if kind != "FINE_TUNING":
            raise validation(f"customizationType {kind} is not supported for the base model {base}.")
        if any(j["jobName"] == body["jobName"] for j in self.store.list("bedrock.job")):
            raise conflict(f"A model customization job with the name {body['jobName']} already exists.")
        train = self._training_file(body.get("trainingDataConfig"), "trainingDataConfig", BASE_MODELS[base])
        validation_uri = ((body.get("validationDataConfig") or {}).get("validators") or [{}])[0].get("s3Uri")
        hyper = body.get("hyperParameters") or {}
        request = {"model": STAND_IN, "training_file": train["core"], "seed": 0,
                   "method": {"type": "supervised", "supervised": {"hyperparameters": {
                       "n_epochs": int(hyper.get("epochCount", 1))}}}}
        job_id = new_id("", 12).lower()
        core = self.jobs.create_job(request)["id"] if train["reason"] is None else None
        record = {
            "id": job_id, "jobArn": arn(f"model-customization-job/{base}/{job_id}"), "jobName": body["jobName"],
            "outputModelName": body["customModelName"], "clientRequestToken": token, "roleArn": body["roleArn"],
            "baseModelArn": f"arn:aws:bedrock:{REGION}::foundation-model/{base}", "hyperParameters": hyper,
            "trainingDataConfig": body["trainingDataConfig"],
            "validationDataConfig": body.get("validationDataConfig") or {"validators": []},
            "outputDataConfig": body.get("outputDataConfig") or {}, "customizationType": kind,
            "creationTime": time.time(), "_core": core, "_reason": train["reason"], "_validation": validation_uri,
        }
        self.store.put("bedrock.job", record)
        return {"jobArn": record["jobArn"]}

    def _training_file(self, config: Any, param: str, nova: bool) -> dict[str, Any]:
        uri = (config or {}).get("s3Uri") if isinstance(config, dict) else None
        if not isinstance(uri, str):
            raise validation(f"{param}.s3Uri is required.")
        bucket, key = s3_location(uri)
        try:
            _, content = self.get_object(bucket, key)
        except AwsError:
            raise validation(f"Unable to access the training data at {uri}: the object does not exist.") from None
        chat, reason = as_chat(content, nova)
        if reason:
            return {"core": None, "reason": reason}
        return {"core": self.files.store_file(filename=f"{key.rsplit('/', 1)[-1]}", purpose="fine-tune",
                                              content=chat)["id"], "reason": None}

    def job(self, identifier: str) -> dict[str, Any]:
        for record in self.store.list("bedrock.job"):
            if identifier in (record["jobArn"], record["jobName"], record["id"]):
                return record
        raise not_found(f"Model customization job {identifier} not found.")

    def job_status(self, record: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
        if record["_core"] is None:
            return "Failed", None
        core = self.jobs.get(record["_core"])
        status = STATUS[core["status"]]
        if status == "Stopped" and time.time() - record.get("_stopped_at", 0) < self.stopping_seconds:
            status = "Stopping"
        return status, core

    def job_view(self, record: dict[str, Any]) -> dict[str, Any]:
        status, core = self.job_status(record)
        view = {k: v for k, v in record.items() if not k.startswith("_") and k != "id" and v is not None}
        view.update(status=status, creationTime=iso(record["creationTime"]),
                    lastModifiedTime=iso((core or {}).get("finished_at") or record["creationTime"]))
        if status in ("Completed", "Failed", "Stopped"):
            view["endTime"] = iso((core or {}).get("finished_at") or record["creationTime"])
        if status == "Failed":
            view["failureMessage"] = record["_reason"] or (core or {}).get("error", {}).get("message")
        if status == "Completed" and core:
            view["outputModelArn"] = self.model_arn(record)
            view["trainingMetrics"] = {"trainingLoss": 0.1}
        return view

    def model_arn(self, record: dict[str, Any]) -> str:
        return arn(f"custom-model/{record['baseModelArn'].rsplit('/', 1)[-1]}/{record['id']}")

    def list_jobs(self, name_contains: str | None, status: str | None) -> dict[str, Any]:
        summaries = []
        for record in self.store.list("bedrock.job", newest_first=True):
            view = self.job_view(record)
            if (name_contains and name_contains not in record["jobName"]) or (status and view["status"] != status):
                continue
            summary = {k: view[k] for k in ("jobArn", "baseModelArn", "jobName", "status", "creationTime",
                                            "lastModifiedTime", "endTime", "customizationType") if k in view}
            summary["customModelName"] = record["outputModelName"]
            if "outputModelArn" in view:
                summary["customModelArn"] = view["outputModelArn"]
            summaries.append(summary)
        return {"modelCustomizationJobSummaries": summaries}

    def stop_job(self, identifier: str) -> None:
        record = self.job(identifier)
        status, _ = self.job_status(record)
        if status != "InProgress":
            raise validation(f"The model customization job {record['jobName']} is {status} and cannot be stopped.")
        self.jobs.cancel_job(record["_core"])
        record["_stopped_at"] = time.time()
        self.store.put("bedrock.job", record)

    # --- custom model deployments -------------------------------------------------------------

    def custom_model(self, model_arn: str) -> dict[str, Any]:
        for record in self.store.list("bedrock.job"):
            if self.model_arn(record) == model_arn and self.job_status(record)[0] == "Completed":
                return record
        raise not_found(f"The custom model {model_arn} does not exist or is not Active.")

    def create_deployment(self, body: dict[str, Any]) -> dict[str, Any]:
        token = body.get("clientRequestToken")
        deployments = self.store.list("bedrock.deployment")
        if token and (known := next((d for d in deployments if d.get("clientRequestToken") == token), None)):
            return {"customModelDeploymentArn": known["customModelDeploymentArn"]}
        name, model = body.get("modelDeploymentName"), body.get("modelArn")
        if not isinstance(name, str) or not isinstance(model, str):
            raise validation("modelDeploymentName and modelArn are required.")
        if any(d["modelDeploymentName"] == name for d in deployments):
            raise conflict(f"A custom model deployment with the name {name} already exists.")
        self.custom_model(model)
        deployment_id = new_id("", 12).lower()
        record = {"id": deployment_id, "customModelDeploymentArn": arn(f"custom-model-deployment/{deployment_id}"),
                  "modelDeploymentName": name, "modelArn": model, "clientRequestToken": token,
                  "description": body.get("description"), "_created": time.time()}
        self.store.put("bedrock.deployment", record)
        return {"customModelDeploymentArn": record["customModelDeploymentArn"]}

    def deployment(self, identifier: str) -> dict[str, Any]:
        for record in self.store.list("bedrock.deployment"):
            if identifier in (record["customModelDeploymentArn"], record["modelDeploymentName"]):
                return record
        raise not_found(f"Custom model deployment {identifier} not found.")

    def deployment_view(self, record: dict[str, Any]) -> dict[str, Any]:
        active = time.time() - record["_created"] >= self.deploy_seconds
        view = {k: v for k, v in record.items() if not k.startswith("_") and k not in ("id", "clientRequestToken")
                and v is not None}
        return view | {"createdAt": iso(record["_created"]), "status": "Active" if active else "Creating",
                       "lastUpdatedAt": iso(record["_created"] + (self.deploy_seconds if active else 0))}

    def list_deployments(self) -> dict[str, Any]:
        return {"modelDeploymentSummaries": [
            {k: v for k, v in self.deployment_view(r).items() if k != "description"}
            for r in self.store.list("bedrock.deployment", newest_first=True)]}

    def delete_deployment(self, identifier: str) -> None:
        self.store.delete("bedrock.deployment", self.deployment(identifier)["id"])

    # --- runtime ------------------------------------------------------------------------------

    def converse(self, model_id: str, body: dict[str, Any]) -> dict[str, Any]:
        messages = [{"role": m.get("role"), "content": "".join(p.get("text", "") for p in m.get("content") or [])}
                    for m in body.get("messages") or []]
        system = " ".join(p.get("text", "") for p in body.get("system") or [])
        chat = ([{"role": "system", "content": system}] if system else []) + messages
        if not messages or messages[0]["role"] != "user":
            raise validation("A conversation must start with a user message. Try again with a conversation "
                             "that starts with a user message.")
        engine_model = self._engine_model(model_id)
        started = time.time()
        reply = self.chat.create_chat_completion(model=engine_model, messages=chat)
        usage = reply["usage"]
        return {"output": {"message": {"role": "assistant",
                                       "content": [{"text": reply["choices"][0]["message"]["content"]}]}},
                "stopReason": "end_turn",
                "usage": {"inputTokens": usage["prompt_tokens"], "outputTokens": usage["completion_tokens"],
                          "totalTokens": usage["total_tokens"]},
                "metrics": {"latencyMs": int((time.time() - started) * 1000)}}

    def _engine_model(self, model_id: str) -> str:
        if model_id.split("/")[-1] in BASE_MODELS or model_id.split(":")[0] in {b.split(":")[0] for b in BASE_MODELS}:
            return STAND_IN
        if ":custom-model-deployment/" in model_id:
            view = self.deployment_view(self.deployment(model_id))
            if view["status"] != "Active":
                raise validation(f"The custom model deployment {model_id} is {view['status']}, not Active.")
            record = self.custom_model(view["modelArn"])
            return self.jobs.get(record["_core"])["fine_tuned_model"]
        if ":custom-model/" in model_id:
            raise validation("Invocation of a custom model requires a custom model deployment for on-demand "
                             "inference or provisioned throughput. Try again with the deployment's ARN.")
        raise validation(f"The provided model identifier is invalid: {model_id}.")
