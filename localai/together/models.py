"""Together AI's account: state on the shared engine, and Together's view of it.

Field names and states follow the `together` SDK's types (3.x; kept in tests/data/):

- job states `pending` (the engine's validating_files), `queued`, `running`, then after
  training `compressing` and `uploading` before `completed`; `error` for a failed job;
  `cancel_requested` in the reply to a cancel, `cancelled` after;
- ids `ft-...`; timestamps ISO 8601; `model_output_name` is `<user>/<base>-<suffix>-<id>`
  and answers chat only once the job is `completed`;
- files are uploaded in three steps (the SDK's UploadManager): POST /files answers 302 with
  a signed `Location` and `X-Together-File-Id`, the SDK PUTs the bytes there, then
  POST /files/{id}/preprocess returns the File. A file whose sha256 is already uploaded
  answers 409 with its `file_id`, which the SDK turns into that file.

Open models run on the engine under a stand-in OpenAI model (token counts use its encoding);
the answers of a fine-tuned model are those of its training data, as in every dialect.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from typing import Any

from localai.common import new_id, now
from localai.config import ServiceConfig
from localai.engine.chat import ChatBackend
from localai.engine.files import FilesBackend
from localai.engine.jobs import JobsBackend
from localai.engine.models import ModelsBackend
from localai.engine.tokens import count_message_tokens
from localai.store import Store

from .exceptions import TogetherError, model_not_available, unsupported_model

USER = "ftflow-local"
STAND_IN = "gpt-4.1-mini-2025-04-14"  # the engine's model under every open model (DPO-capable)
# Open models this account may fine-tune, with their max_seq_length for SFT (emulator values).
MODELS = {
    "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference": 131072,
    "meta-llama/Llama-3.2-3B-Instruct": 131072,
    "Qwen/Qwen2.5-7B-Instruct": 32768,
}
STATUS = {"validating_files": "pending", "queued": "queued", "running": "running", "paused": "running"}
STATUS.update(failed="error", cancelled="cancelled")
EVENT_TYPES = {  # the engine's event messages -> Together's event types
    "Validating training file": "training_data_downloading",
    "Files validated": "training_data_download_complete",
    "Fine-tuning job started": "training_start",
    "Checkpoint created": "checkpoint_save",
    "New fine-tuned model created": "model_upload_complete",
    "The job has successfully completed": "job_complete",
    "Fine-tuning job cancelled": "job_stopped",
    "Fine-tuning job failed": "job_error",
}


def iso(timestamp: float | None) -> str | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def job_id(core_id: str) -> str:
    return "ft-" + core_id.removeprefix("ftjob-")


def core_job_id(together_id: str) -> str:
    return "ftjob-" + together_id.removeprefix("ft-")


def require_model(model: str | None) -> str:
    if model not in MODELS:
        raise unsupported_model(str(model))
    return model


def model_limits(model: str) -> dict[str, Any]:
    """What `fine_tuning.model_limits` returns; the SDK builds its request from it (emulator values)."""
    return {
        "model_name": require_model(model),
        "default_gradient_accumulation_steps": 1,
        "lora_training": {
            "default_rank": 64,
            "max_batch_size": 32,
            "max_batch_size_dpo": 16,
            "max_rank": 64,
            "min_batch_size": 8,
            "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj"],
        },
        "full_training": {"max_batch_size": 16, "max_batch_size_dpo": 8, "min_batch_size": 8},
        "max_learning_rate": 1.0,
        "min_learning_rate": 0.0,
        "max_num_checkpoints": 10,
        "max_num_epochs": 20,
        "max_num_evals": 100,
        "max_seq_length_sft": MODELS[model],
        "max_seq_length_dpo": MODELS[model],
        "min_max_seq_length": 512,
        "merge_output_lora": True,
        "supports_full_training": True,
        "supports_reasoning": False,
        "supports_tools": True,
        "supports_vision": False,
    }


def output_name(job: dict[str, Any]) -> str:
    """Together's name for a job's model; the engine keeps its own id for it (`fine_tuned_model`)."""
    base = job.get("_together", {}).get("model", job["model"]).split("/")[-1]
    suffix = job.get("_suffix")
    return f"{USER}/{base}" + (f"-{suffix}" if suffix else "") + f"-{job['id'][-8:]}"


class TogetherJobs(JobsBackend):
    """The engine, noting when a job finished training (compressing and uploading follow)."""

    def _succeed(self, job: dict[str, Any]) -> None:
        job["_sim"]["trained_clock"] = time.time()
        super()._succeed(job)


class TogetherBackend:
    """State of the emulated Together account."""

    def __init__(self, config: ServiceConfig) -> None:
        self.store = Store(config.data_dir / "together")
        self.files = FilesBackend(self.store, config.max_file_bytes)
        self.models = ModelsBackend(self.store)
        self.jobs = TogetherJobs(
            self.store, self.files, self.models, seconds_per_1k_tokens=config.seconds_per_1k_tokens
        )
        self.chat = ChatBackend(self.store, self.models, instruction_following=config.instruction_following)
        self.signing_key = (config.api_key or "").encode()
        self.compressing_seconds = 0.1
        self.uploading_seconds = 0.1


    # --- files: announce, put, preprocess -------------------------------------------------------

    def signature(self, file_id: str) -> str:
        return hmac.new(self.signing_key, file_id.encode(), hashlib.sha256).hexdigest()

    def announce_file(self, *, file_name: str, purpose: str, file_type: str, checksum: str) -> dict[str, Any]:
        """Step 1: a file id and where to put the bytes, or 409 with the file of the same content."""
        if purpose != "fine-tune":
            raise TogetherError(400, f"Purpose '{purpose}' is not supported by this service.", param="purpose")
        if file_type != "jsonl":
            raise TogetherError(400, f"File type '{file_type}' is not supported by this service.", param="file_type")
        for known in self.store.list("together.file"):
            if known["checksum"] == checksum and known.get("_core"):
                raise DuplicateFile(known["id"])
        record = {
            "id": new_id("file-"),
            "filename": file_name,
            "purpose": purpose,
            "checksum": checksum,
            "created_at": now(),
            "_core": None,
        }
        return self.store.put("together.file", record)

    def put_content(self, file_id: str, signature: str, content: bytes) -> None:
        """Step 2: the bytes at the signed URL (no API key: the signature is the permission)."""
        if not hmac.compare_digest(signature, self.signature(file_id)):
            raise TogetherError(403, "The upload URL's signature is not valid.")
        record = self.store.get("together.file", file_id)
        if record is None:
            raise TogetherError(404, f"No upload is expected for file {file_id}.")
        if hashlib.sha256(content).hexdigest() != record["checksum"]:
            raise TogetherError(400, "The uploaded bytes do not match the announced checksum.")
        core = self.files.store_file(filename=record["filename"], purpose=record["purpose"], content=content)
        record["_core"] = core["id"]
        self.store.put("together.file", record)

    def get_file(self, file_id: str) -> dict[str, Any]:
        record = self.store.get("together.file", file_id)
        if record is None:
            raise TogetherError(404, f"File {file_id} not found.", param="id")
        return record

    def core_file(self, file_id: str, param: str) -> str:
        core = self.store.get("together.file", file_id)
        if core is None or not core.get("_core"):
            raise TogetherError(400, f"File {file_id} was not found or is not uploaded yet.", param=param)
        return core["_core"]

    def file_view(self, record: dict[str, Any]) -> dict[str, Any]:
        view: dict[str, Any] = {
            "id": record["id"],
            "object": "file",
            "bytes": 0,
            "created_at": record["created_at"],
            "filename": record["filename"],
            "FileType": "jsonl",
            "purpose": record["purpose"],
            "processing_status": "PENDING",
        }
        if record.get("_core"):
            core = self.files.get(record["_core"])
            view["bytes"] = core["bytes"]
            if core["status"] == "error":
                view["processing_status"] = "INVALID_FORMAT"
                report = {"valid": False, "error": core.get("status_details"), "error_type": "INVALID_FORMAT"}
            else:
                view["processing_status"] = "COMPLETED"
                lines = sum(1 for line in self.store.blob_path(core["id"]).read_bytes().splitlines() if line.strip())
                report = {"valid": True, "dataset_format": "CONVERSATION", "nlines": lines}
            view["validation_report"] = {"file_id": record["id"], **report}
        return view

    def list_files(self) -> dict[str, Any]:
        records = self.store.list("together.file", newest_first=True)
        return {"data": [self.file_view(r) for r in records if r.get("_core")]}  # announced only: not a file yet

    def delete_file(self, file_id: str) -> dict[str, Any]:
        record = self.get_file(file_id)
        if record.get("_core"):
            self.files.delete_file(record["_core"])
        self.store.delete("together.file", file_id)
        return {"id": file_id, "deleted": True}

    def file_content(self, file_id: str) -> bytes:
        return self.store.blob_path(self.core_file(file_id, "id")).read_bytes()

    # --- jobs --------------------------------------------------------------------------------

    def estimate_price(self, body: dict[str, Any]) -> dict[str, Any]:
        require_model(body.get("model"))
        content = self.file_content(body["training_file"])
        tokens = 0
        for line in content.decode("utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                tokens += count_message_tokens(STAND_IN, record.get("messages") or [])
        return {
            "estimation_available": True,
            "allowed_to_proceed": True,
            "estimated_train_token_count": tokens * int(body.get("n_epochs") or 1),
            "estimated_eval_token_count": 0,
        }

    def create_job(self, body: dict[str, Any]) -> dict[str, Any]:
        model = require_model(body.get("model"))
        suffix = body.get("suffix")
        if suffix is not None and len(suffix) > 40:
            raise TogetherError(400, "suffix must be at most 40 characters.", param="suffix")
        method = (body.get("training_method") or {}).get("method", "sft")
        if method not in ("sft", "dpo"):
            raise TogetherError(400, f"training_method '{method}' is not supported.", param="training_method")
        batch = body.get("batch_size")
        hyper = {"n_epochs": int(body.get("n_epochs") or 1)} | ({"batch_size": batch} if isinstance(batch, int) else {})
        engine_method = "supervised" if method == "sft" else "dpo"
        request = {
            "model": STAND_IN,
            "training_file": self.core_file(body["training_file"], "training_file"),
            "validation_file": (
                self.core_file(body["validation_file"], "validation_file") if body.get("validation_file") else None
            ),
            "suffix": suffix,
            "seed": body.get("random_seed"),
            "method": {"type": engine_method, engine_method: {"hyperparameters": hyper}},
        }
        job = self.jobs.create_job(request)
        with self.store.transaction():
            stored = self.store.get("job", job["id"])
            assert stored is not None
            stored["_together"] = {k: v for k, v in body.items() if not k.startswith("wandb")} | {"model": model}
            self.store.put("job", stored)
        return self.job_view(stored)

    def job(self, together_id: str) -> dict[str, Any]:
        job = self.store.get("job", core_job_id(together_id))
        if job is None:
            raise TogetherError(404, f"Fine-tune job {together_id} not found.", param="id")
        return job

    def status(self, job: dict[str, Any]) -> str:
        """Together's status; after training, `compressing` then `uploading` for their seconds each.

        Each of the two is shown to at least one reader before the next begins, so a client that
        polls (however late, on a loaded machine) sees Together's whole sequence, as it would there.
        """
        if job["status"] != "succeeded":
            return STATUS[job["status"]]
        sim = job["_sim"]
        since = time.time() - sim.get("trained_clock", 0)
        due = sum(since >= limit for limit in (self.compressing_seconds,
                                               self.compressing_seconds + self.uploading_seconds))
        shown = sim.get("finishing_shown", -1)
        phase = min(due, shown + 1)
        if phase > shown:
            sim["finishing_shown"] = phase
            self.store.put("job", job)
        return ("compressing", "uploading", "completed")[phase]

    def job_view(self, job: dict[str, Any]) -> dict[str, Any]:
        asked = job.get("_together", {})
        hyper = job["hyperparameters"]
        method = asked.get("training_method") or {"method": "sft", "train_on_inputs": "auto"}
        status = self.status(job)
        return {
            "id": job_id(job["id"]),
            "status": status,
            "user_id": USER,
            "created_at": iso(job["created_at"]),
            "updated_at": iso(job["finished_at"] or job["created_at"]),
            "started_at": iso(job["created_at"]),
            "model": asked.get("model"),
            "model_output_name": output_name(job),
            "training_file": asked.get("training_file"),
            "validation_file": asked.get("validation_file") or None,
            "n_epochs": hyper["n_epochs"] if hyper["n_epochs"] != "auto" else asked.get("n_epochs"),
            "batch_size": hyper["batch_size"] if hyper["batch_size"] != "auto" else asked.get("batch_size"),
            "learning_rate": asked.get("learning_rate"),
            "n_checkpoints": asked.get("n_checkpoints"),
            "n_evals": asked.get("n_evals"),
            "suffix": job.get("_suffix"),
            "random_seed": job["seed"],
            "token_count": job["trained_tokens"],
            "training_method": method,
            "training_type": asked.get("training_type"),
            "lr_scheduler": asked.get("lr_scheduler"),
            "warmup_ratio": asked.get("warmup_ratio"),
            "max_grad_norm": asked.get("max_grad_norm"),
            "weight_decay": asked.get("weight_decay"),
        }

    def list_jobs(self) -> dict[str, Any]:
        return {"data": [self.job_view(j) for j in self.store.list("job", newest_first=True)]}

    def cancel(self, together_id: str) -> dict[str, Any]:
        job = self.job(together_id)
        if job["status"] in ("succeeded", "failed", "cancelled"):
            raise TogetherError(400, f"Fine-tune job {together_id} is {self.status(job)} and cannot be cancelled.")
        self.jobs.cancel_job(job["id"])
        return self.job_view(self.job(together_id)) | {"status": "cancel_requested"}

    def events(self, together_id: str) -> dict[str, Any]:
        job = self.job(together_id)
        asked_file = job.get("_together", {}).get("training_file", job["training_file"])
        events = []
        for event in self.store.list("event", parent=job["id"]):
            if event.get("type") == "metrics":
                continue  # Together serves training metrics at /metrics, not as events
            kind = next((t for prefix, t in EVENT_TYPES.items() if event["message"].startswith(prefix)), "warning")
            events.append(
                {
                    "object": "fine-tune-event",
                    "created_at": iso(event["created_at"]),
                    "message": event["message"].replace(job["training_file"], asked_file),
                    "type": kind,
                    "level": event.get("level", "info"),
                }
            )
        return {"data": events}

    # --- chat --------------------------------------------------------------------------------

    def chat_completion(self, body: dict[str, Any]) -> dict[str, Any]:
        model = body.get("model")
        messages = body.get("messages") or []
        if model in MODELS:
            return together_reply(self.chat.create_chat_completion(model=STAND_IN, messages=messages), str(model))
        job = next((j for j in self.store.list("job") if output_name(j) == model), None)
        if job is None or self.status(job) != "completed":
            raise model_not_available(str(model))
        reply = self.chat.create_chat_completion(model=job["fine_tuned_model"], messages=messages)
        return together_reply(reply, str(model))


def together_reply(reply: dict[str, Any], model: str) -> dict[str, Any]:
    """The engine's chat completion in Together's shape: its model name, a `prompt` list, no OpenAI-only fields."""
    choices = [
        {
            "index": c["index"],
            "message": {"role": "assistant", "content": c["message"]["content"]},
            "finish_reason": c["finish_reason"],
            "logprobs": None,
        }
        for c in reply["choices"]
    ]
    keep = ("id", "object", "created", "usage")
    return {k: reply[k] for k in keep} | {"model": model, "choices": choices, "prompt": []}


class DuplicateFile(TogetherError):
    """409 with the id of the file that already has these bytes (the SDK reads `file_id`)."""

    def __init__(self, file_id: str) -> None:
        super().__init__(409, f"A file with the same content already exists: {file_id}", code="file_exists")
        self.file_id = file_id
        self.headers = {"x-should-retry": "false"}

    def body(self) -> dict[str, Any]:
        return super().body() | {"file_id": self.file_id}
