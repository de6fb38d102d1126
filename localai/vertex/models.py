"""A Google Cloud project: Cloud Storage buckets and objects, Vertex AI tuning jobs and their endpoints.

Shapes follow the references in tests/data/vertex/ (SOURCE.md): the Cloud Storage JSON API v1
(bucket and object resources, multipart and resumable uploads) and Vertex AI v1beta1
(`TuningJob`, `generateContent`), as `google-cloud-storage` and `google-genai` parse them.

- Tuning reads its data from `gs://` objects of this project and validates Gemini's format
  line by line, as Vertex does after the create: a file that is not Gemini's (an OpenAI chat
  file, say) fails the job with the line and the reason.
- A valid file is converted to the engine's chat (or preference) format and trained by the
  shared engine under a stand-in model; the job shows only Vertex's states (`JOB_STATE_*`, with
  the detail `tuningJobState` while pending or running): the engine's validating_files is
  PENDING / PROCESSING_DATASET, queued is QUEUED / WAITING_FOR_QUOTA, running is RUNNING /
  TUNING; a cancel shows CANCELLING before CANCELLED.
- A succeeded job has a tuned model and an endpoint that answers `generateContent` with what
  the job was trained on, as in every dialect; `tuningDataStats` gives the real token count.
- Refusals: a base model that cannot be tuned (400 INVALID_ARGUMENT), the service's `refusal`
  (403 PERMISSION_DENIED), its `daily_job_limit` (429 RESOURCE_EXHAUSTED, "Quota exceeded").
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import time
from datetime import UTC, datetime
from typing import Any

from localai.common import new_id
from localai.config import ServiceConfig
from localai.engine.chat import ChatBackend
from localai.engine.files import FilesBackend
from localai.engine.jobs import JobsBackend
from localai.engine.models import ModelsBackend
from localai.engine.tokens import count_message_tokens, count_text_tokens
from localai.store import Store

from .exceptions import GoogleError, StorageError

STAND_IN = "gpt-4.1-mini-2025-04-14"  # the engine's model under every Gemini model (DPO-capable)
TUNABLE = ("gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.5-pro")  # emulator values
MAX_VALIDATION_EXAMPLES = 5_000
MAX_EXAMPLE_TOKENS = 131_072
CANCELLING_SECONDS = 0.2
STATES = {  # engine status -> (JobState, TuningJobState)
    "validating_files": ("JOB_STATE_PENDING", "TUNING_JOB_STATE_PROCESSING_DATASET"),
    "queued": ("JOB_STATE_QUEUED", "TUNING_JOB_STATE_WAITING_FOR_QUOTA"),
    "running": ("JOB_STATE_RUNNING", "TUNING_JOB_STATE_TUNING"),
    "paused": ("JOB_STATE_PAUSED", None),
    "succeeded": ("JOB_STATE_SUCCEEDED", None),
    "failed": ("JOB_STATE_FAILED", None),
    "cancelled": ("JOB_STATE_CANCELLED", None),
}
SPECS = {"supervisedTuningSpec": "supervised", "preferenceOptimizationSpec": "dpo"}


def rfc3339(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def numeric_id() -> str:
    return str(random.randrange(10**18, 10**19))


class InvalidDataset(ValueError):
    """A line of a tuning file that is not Gemini's format; the message names the line and the reason."""


def _parts_text(value: Any, where: str) -> str:
    if not isinstance(value, dict) or not isinstance(value.get("parts"), list) or not value["parts"]:
        raise InvalidDataset(f"{where} must have a non-empty `parts` list")
    texts = []
    for part in value["parts"]:
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            raise InvalidDataset(f"{where}: every part must have `text` (text-only tuning)")
        texts.append(part["text"])
    return "".join(texts)


def _contents(record: dict[str, Any]) -> list[dict[str, Any]]:
    contents = record.get("contents")
    if not isinstance(contents, list) or not contents:
        keys = ", ".join(sorted(record)) or "none"
        raise InvalidDataset(f"missing required field `contents` (found: {keys})")
    messages = []
    for index, content in enumerate(contents):
        role = content.get("role") if isinstance(content, dict) else None
        if role not in ("user", "model"):
            raise InvalidDataset(f"contents[{index}].role must be \"user\" or \"model\", got {role!r}")
        text = _parts_text(content, f"contents[{index}]")
        messages.append({"role": "assistant" if role == "model" else "user", "content": text})
    return messages


def _system(record: dict[str, Any], key: str) -> list[dict[str, Any]]:
    if key not in record:
        return []
    return [{"role": "system", "content": _parts_text(record[key], key)}]


def engine_example(record: Any, method: str) -> dict[str, Any]:
    """One Gemini tuning example as the engine's OpenAI-format line; InvalidDataset if it is not Gemini's."""
    if not isinstance(record, dict):
        raise InvalidDataset("each line must be a JSON object")
    if method == "supervised":
        messages = _system(record, "systemInstruction") + _contents(record)
        if not any(m["role"] == "assistant" for m in messages):
            raise InvalidDataset("`contents` has no model turn to learn from")
        return {"messages": messages}
    messages = _system(record, "system_instruction") + _contents(record)
    if messages[-1]["role"] != "user":
        raise InvalidDataset("`contents` must end with a user turn")
    completions = record.get("completions")
    if not isinstance(completions, list) or len(completions) != 2 or sorted(
            c.get("score") if isinstance(c, dict) else None for c in completions) != [0, 1]:
        raise InvalidDataset("`completions` must hold two completions, scored 1 (preferred) and 0")
    outputs = {}
    for completion in completions:
        turn = completion.get("completion")
        if not isinstance(turn, dict) or turn.get("role") != "model":
            raise InvalidDataset("each completion must be one model turn")
        outputs[completion["score"]] = [{"role": "assistant", "content": _parts_text(turn, "completion")}]
    return {"input": {"messages": messages}, "preferred_output": outputs[1], "non_preferred_output": outputs[0]}


def tokens_of(example: dict[str, Any]) -> int:
    if "messages" in example:
        return count_message_tokens(STAND_IN, example["messages"])
    longest = max(count_text_tokens(STAND_IN, example[k][0]["content"]) for k in ("preferred_output",
                                                                                    "non_preferred_output"))
    return count_message_tokens(STAND_IN, example["input"]["messages"]) + longest


class VertexBackend:
    """State of the emulated Google Cloud project."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.store = Store(config.data_dir / "vertex")
        self.files = FilesBackend(self.store, config.max_file_bytes)
        self.models = ModelsBackend(self.store)
        self.jobs = JobsBackend(self.store, self.files, self.models, seconds_per_1k_tokens=config.seconds_per_1k_tokens)
        self.chat = ChatBackend(self.store, self.models, instruction_following=config.instruction_following)


    # --- Cloud Storage ------------------------------------------------------------------------

    def create_bucket(self, project: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("name")
        if not isinstance(name, str) or not 3 <= len(name) <= 63:
            raise StorageError(400, f"Invalid bucket name: '{name}'", reason="invalid")
        if self.store.get("gcs.bucket", name) is not None:
            raise StorageError(409, "Your previous request to create the named bucket succeeded and you already "
                                    "own it.", reason="conflict")
        created = rfc3339(time.time())
        bucket = {"kind": "storage#bucket", "id": name, "name": name, "projectNumber": str(abs(hash(project)) % 10**12),
                  "metageneration": "1", "location": str(body.get("location") or "US").upper(),
                  "storageClass": body.get("storageClass") or "STANDARD", "etag": "CAE=", "timeCreated": created,
                  "updated": created, "locationType": "multi-region"}
        return self.store.put("gcs.bucket", bucket)

    def bucket(self, name: str) -> dict[str, Any]:
        bucket = self.store.get("gcs.bucket", name)
        if bucket is None:
            raise StorageError(404, "The specified bucket does not exist.", reason="notFound")
        return bucket

    def put_object(self, bucket: str, name: str, content: bytes, metadata: dict[str, Any],
                   base_url: str) -> dict[str, Any]:
        self.bucket(bucket)
        if not name:
            raise StorageError(400, "Required object name is missing.", reason="required")
        blob = new_id("gcs-")
        self.store.blob_path(blob).write_bytes(content)
        import google_crc32c  # of google-cloud-storage (the vertex extra); imported where it is used

        crc = google_crc32c.Checksum(content).digest()
        generation = str(time.time_ns() // 1000)
        created = rfc3339(time.time())
        record = {"id": f"{bucket}/{name}", "_blob": blob, "name": name, "bucket": bucket, "generation": generation,
                  "metageneration": "1", "contentType": metadata.get("contentType") or "application/octet-stream",
                  "storageClass": "STANDARD", "size": str(len(content)),
                  "md5Hash": base64.b64encode(hashlib.md5(content).digest()).decode(),  # noqa: S324 - GCS's field
                  "crc32c": base64.b64encode(crc).decode(), "etag": "CAE=", "timeCreated": created,
                  "updated": created, "metadata": metadata.get("metadata") or None}
        old = self.store.get("gcs.object", record["id"])
        self.store.put("gcs.object", record, parent=bucket)
        if old is not None:
            self.store.blob_path(old["_blob"]).unlink(missing_ok=True)
        return self.object_view(record, base_url)

    def object(self, bucket: str, name: str) -> dict[str, Any]:
        self.bucket(bucket)
        record = self.store.get("gcs.object", f"{bucket}/{name}")
        if record is None:
            raise StorageError(404, f"No such object: {bucket}/{name}", reason="notFound")
        return record

    def object_view(self, record: dict[str, Any], base_url: str) -> dict[str, Any]:
        from urllib.parse import quote

        path = f"b/{record['bucket']}/o/{quote(record['name'], safe='')}"
        view = {k: v for k, v in record.items() if not k.startswith("_") and v is not None}
        return {"kind": "storage#object", **view, "id": f"{record['id']}/{record['generation']}",
                "selfLink": f"{base_url}/gcs/storage/v1/{path}",
                "mediaLink": f"{base_url}/gcs/download/storage/v1/{path}?generation={record['generation']}&alt=media"}

    def object_content(self, bucket: str, name: str) -> tuple[bytes, dict[str, Any]]:
        record = self.object(bucket, name)
        return self.store.blob_path(record["_blob"]).read_bytes(), record

    def list_objects(self, bucket: str, prefix: str | None, base_url: str) -> dict[str, Any]:
        self.bucket(bucket)
        items = [self.object_view(r, base_url) for r in self.store.list("gcs.object", parent=bucket)
                 if r["name"].startswith(prefix or "")]
        return {"kind": "storage#objects", **({"items": items} if items else {})}

    def delete_object(self, bucket: str, name: str) -> None:
        record = self.object(bucket, name)
        self.store.delete("gcs.object", record["id"])
        self.store.blob_path(record["_blob"]).unlink(missing_ok=True)

    def start_resumable(self, bucket: str, name: str | None, metadata: dict[str, Any]) -> str:
        self.bucket(bucket)
        name = name or metadata.get("name")
        if not name:
            raise StorageError(400, "Required object name is missing.", reason="required")
        session = {"id": new_id("upload-"), "bucket": bucket, "name": name, "metadata": metadata, "received": 0}
        self.store.put("gcs.upload", session)
        self.store.blob_path(session["id"]).write_bytes(b"")
        return session["id"]

    def resume(self, upload_id: str, content_range: str | None, chunk: bytes,
               base_url: str) -> tuple[dict[str, Any] | None, int]:
        """One PUT of a resumable upload: (the object when complete, else None; bytes received so far)."""
        session = self.store.get("gcs.upload", upload_id)
        if session is None:
            raise StorageError(404, "No such upload session.", reason="notFound")
        spans, _, total_text = (content_range or "bytes */*").removeprefix("bytes ").partition("/")
        total = int(total_text) if total_text.isdigit() else None
        path = self.store.blob_path(upload_id)
        if spans != "*":
            first = int(spans.split("-")[0])
            if first != session["received"]:
                raise StorageError(400, f"Invalid request. The chunk starts at {first}, expected "
                                        f"{session['received']}.", reason="invalid")
            with open(path, "ab") as f:
                f.write(chunk)
            session["received"] += len(chunk)
            self.store.put("gcs.upload", session)
        if total is not None and session["received"] >= total:
            view = self.put_object(session["bucket"], session["name"], path.read_bytes(), session["metadata"],
                                   base_url)
            self.store.delete("gcs.upload", upload_id)
            path.unlink(missing_ok=True)
            return view, session["received"]
        return None, session["received"]

    # --- Vertex AI tuning ---------------------------------------------------------------------

    def _read_gcs(self, uri: str, field: str) -> bytes:
        if not isinstance(uri, str) or not uri.startswith("gs://") or "/" not in uri[5:]:
            raise GoogleError(400, f"{field} must be a gs:// URI of a JSONL file, got {uri!r}.")
        bucket, _, name = uri[5:].partition("/")
        try:
            return self.object_content(bucket, name)[0]
        except StorageError:
            raise GoogleError(400, f"The dataset {uri} does not exist or is not readable.") from None

    def _convert(self, content: bytes, method: str, uri: str) -> tuple[bytes, int, int]:
        """The engine's JSONL for a Gemini file, its example count and characters; InvalidDataset names the line."""
        out, count, characters = bytearray(), 0, 0
        for number, line in enumerate(content.splitlines(), 1):
            if not line.strip():
                continue
            try:
                example = engine_example(json.loads(line), method)
            except json.JSONDecodeError:
                raise InvalidDataset(f"{uri}, line {number}: not valid JSON") from None
            except InvalidDataset as error:
                raise InvalidDataset(f"{uri}, line {number}: {error}") from None
            if (tokens := tokens_of(example)) > MAX_EXAMPLE_TOKENS:
                raise InvalidDataset(f"{uri}, line {number}: {tokens} tokens, over the limit of "
                                     f"{MAX_EXAMPLE_TOKENS} per example")
            out += json.dumps(example).encode() + b"\n"
            count += 1
            characters += len(line)
        if count == 0:
            raise InvalidDataset(f"{uri} holds no examples")
        return bytes(out), count, characters

    def create_tuning_job(self, project: str, location: str, body: dict[str, Any]) -> dict[str, Any]:
        base = body.get("baseModel")
        specs = [key for key in SPECS if isinstance(body.get(key), dict)]
        if len(specs) != 1:
            raise GoogleError(400, "Exactly one of supervisedTuningSpec and preferenceOptimizationSpec is required.")
        if base not in TUNABLE:
            raise GoogleError(400, f"Base model {base} is not supported for tuning. Supported base models: "
                                   f"{', '.join(TUNABLE)}.")
        if self.config.refusal:
            raise GoogleError(403, f"Permission 'aiplatform.tuningJobs.create' denied on resource "
                                   f"'//aiplatform.googleapis.com/projects/{project}/locations/{location}' "
                                   f"(or it may not exist). {self.config.refusal}")
        if self.config.daily_job_limit is not None:
            day_ago = time.time() - 86_400
            if sum(j["_created"] > day_ago for j in self.store.list("vertex.job")) >= self.config.daily_job_limit:
                raise GoogleError(429, "Quota exceeded for quota metric 'Tuning jobs per day' and limit 'Tuning jobs "
                                       f"per day per region' of service 'aiplatform.googleapis.com' for consumer "
                                       f"'project_number:{project}'.")
        labels = body.get("labels") or {}
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise GoogleError(400, "labels must map strings to strings.")
        spec_key = specs[0]
        spec = body[spec_key]
        method = SPECS[spec_key]
        job = {"id": numeric_id(), "project": project, "location": location, "_request": body, "_created": time.time(),
               "_method": method, "_core": None, "_failure": None, "_cancel_clock": None, "_stats": None}
        training = self._read_gcs(spec.get("trainingDatasetUri"), "trainingDatasetUri")
        validation = (self._read_gcs(spec["validationDatasetUri"], "validationDatasetUri")
                      if spec.get("validationDatasetUri") else None)
        try:
            train_lines, count, characters = self._convert(training, method, spec["trainingDatasetUri"])
            valid_lines = None
            if validation is not None:
                valid_lines, valid_count, _ = self._convert(validation, method, spec["validationDatasetUri"])
                if valid_count > MAX_VALIDATION_EXAMPLES:
                    raise InvalidDataset(f"{spec['validationDatasetUri']}: {valid_count} examples, over the limit of "
                                         f"{MAX_VALIDATION_EXAMPLES} for a validation dataset")
        except InvalidDataset as error:
            job["_failure"] = {"code": 3, "message": f"Dataset validation failed: {error}"}
            self.store.put("vertex.job", job)
            return self.job_view(job, created=True)
        hyper = spec.get("hyperParameters") or {}
        engine_hyper = {"n_epochs": int(hyper["epochCount"])} if hyper.get("epochCount") else {}
        if method == "dpo" and hyper.get("beta") is not None:
            engine_hyper["beta"] = float(hyper["beta"])
        core_train = self.files.store_file(filename="train.jsonl", purpose="fine-tune", content=train_lines)
        core_valid = (self.files.store_file(filename="validation.jsonl", purpose="fine-tune", content=valid_lines)
                      if valid_lines is not None else None)
        core = self.jobs.create_job({"model": STAND_IN, "training_file": core_train["id"],
                                     "validation_file": core_valid["id"] if core_valid else None,
                                     "method": {"type": method, method: {"hyperparameters": engine_hyper}}})
        job["_core"] = core["id"]
        job["_stats"] = {"examples": count, "characters": characters}
        self.store.put("vertex.job", job)
        return self.job_view(job, created=True)

    def tuning_job(self, project: str, location: str, job_id: str) -> dict[str, Any]:
        job = self.store.get("vertex.job", job_id)
        if job is None or (job["project"], job["location"]) != (project, location):
            raise GoogleError(404, f"The TuningJob does not exist: projects/{project}/locations/{location}/"
                                   f"tuningJobs/{job_id}")
        return job

    def _state(self, job: dict[str, Any]) -> tuple[str, str | None, dict[str, Any] | None]:
        if job["_failure"]:
            return "JOB_STATE_FAILED", None, None
        core = self.jobs.get(job["_core"])
        if job["_cancel_clock"] and time.time() - job["_cancel_clock"] < CANCELLING_SECONDS:
            return "JOB_STATE_CANCELLING", None, core
        state, detail = STATES[core["status"]]
        return state, detail, core

    def job_view(self, job: dict[str, Any], *, created: bool = False) -> dict[str, Any]:
        request = job["_request"]
        name = f"projects/{job['project']}/locations/{job['location']}/tuningJobs/{job['id']}"
        state, detail, core = ("JOB_STATE_PENDING", None, None) if created else self._state(job)
        view: dict[str, Any] = {
            "name": name, "baseModel": request["baseModel"], "state": state,
            "createTime": rfc3339(job["_created"]), "updateTime": rfc3339(time.time()),
            **{k: request[k] for k in (*SPECS, "tunedModelDisplayName", "description", "labels") if k in request},
        }
        if detail:
            view["tuningJobState"] = detail
        if core is not None and core["status"] not in ("validating_files", "queued"):
            view["startTime"] = rfc3339(job["_created"])
        if not created and job["_failure"]:
            view["error"] = job["_failure"]
            view["endTime"] = rfc3339(job["_created"])
        if core is not None and core["finished_at"]:
            view["endTime"] = rfc3339(core["finished_at"])
            if core["status"] == "failed":
                view["error"] = {"code": 13, "message": (core.get("error") or {}).get("message") or "Tuning failed."}
        if core is not None and core["status"] == "succeeded" and state == "JOB_STATE_SUCCEEDED":
            endpoint = self.endpoint_of(job)
            view["tunedModel"] = {"model": f"projects/{job['project']}/locations/{job['location']}/models/"
                                           f"{job['id'][:10]}@1",
                                  "endpoint": f"projects/{job['project']}/locations/{job['location']}/endpoints/"
                                              f"{endpoint}"}
            stats = {"tuningDatasetExampleCount": str(job["_stats"]["examples"]),
                     "totalBillableTokenCount": str(core["trained_tokens"] or 0),
                     "tuningStepCount": str(core["_sim"].get("total_steps", 0))}
            if job["_method"] == "supervised":
                stats["totalTuningCharacterCount"] = str(job["_stats"]["characters"])
            view["tuningDataStats"] = {("supervisedTuningDataStats" if job["_method"] == "supervised"
                                        else "preferenceOptimizationDataStats"): stats}
        return view

    def endpoint_of(self, job: dict[str, Any]) -> str:
        """The endpoint serving a succeeded job's model (made once, when first shown)."""
        if "_endpoint" not in job:
            job["_endpoint"] = numeric_id()
            self.store.put("vertex.job", job)
            self.store.put("vertex.endpoint", {"id": job["_endpoint"], "job": job["id"]})
        return job["_endpoint"]

    def list_tuning_jobs(self, project: str, location: str, label_filter: dict[str, str]) -> dict[str, Any]:
        jobs = [j for j in self.store.list("vertex.job", newest_first=True)
                if (j["project"], j["location"]) == (project, location)
                and all((j["_request"].get("labels") or {}).get(k) == v for k, v in label_filter.items())]
        return {"tuningJobs": [self.job_view(j) for j in jobs]} if jobs else {}

    def cancel_tuning_job(self, project: str, location: str, job_id: str) -> dict[str, Any]:
        job = self.tuning_job(project, location, job_id)
        state, _, core = self._state(job)
        if state in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"):
            raise GoogleError(400, f"Cannot cancel tuning job {job_id} in state {state}.")
        if core is not None and core["status"] not in ("succeeded", "failed", "cancelled"):
            self.jobs.cancel_job(core["id"])
            job["_cancel_clock"] = time.time()
            self.store.put("vertex.job", job)
        return {}

    # --- generateContent ----------------------------------------------------------------------

    def generate(self, model: str | None, body: dict[str, Any], response_model: str) -> dict[str, Any]:
        """Answer a generateContent request with the engine: a tuned model (`model`) or the stand-in base."""
        messages = _system(body, "systemInstruction") if "systemInstruction" in body else []
        try:
            messages += _contents(body)
        except InvalidDataset as error:
            raise GoogleError(400, f"Invalid request: {error}") from None
        reply = self.chat.create_chat_completion(model=model or STAND_IN, messages=messages)
        usage = reply["usage"]
        return {"candidates": [{"content": {"role": "model",
                                            "parts": [{"text": reply["choices"][0]["message"]["content"]}]},
                                "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": usage["prompt_tokens"],
                                  "candidatesTokenCount": usage["completion_tokens"],
                                  "totalTokenCount": usage["total_tokens"]},
                "modelVersion": response_model, "createTime": rfc3339(time.time()), "responseId": new_id("", 20)}

    def generate_on_endpoint(self, project: str, location: str, endpoint_id: str,
                             body: dict[str, Any]) -> dict[str, Any]:
        endpoint = self.store.get("vertex.endpoint", endpoint_id)
        job = self.store.get("vertex.job", endpoint["job"]) if endpoint else None
        if job is None or (job["project"], job["location"]) != (project, location):
            raise GoogleError(404, f"Endpoint projects/{project}/locations/{location}/endpoints/{endpoint_id} not "
                                   "found.")
        core = self.jobs.get(job["_core"])
        return self.generate(core["fine_tuned_model"], body, job["_request"]["baseModel"])

    def generate_on_base(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        if model not in TUNABLE:
            raise GoogleError(404, f"Publisher Model `publishers/google/models/{model}` was not found or your "
                                   "project does not have access to it.")
        return self.generate(None, body, model)
