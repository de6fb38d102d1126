"""The emulated Fireworks account: datasets, SFT and DPO jobs on the shared engine, and chat.

Shapes follow the `fireworks-ai` SDK's types (1.2.30; kept in tests/data/fireworks/):

- resources are named `accounts/{account}/datasets/{id}`, `.../supervisedFineTuningJobs/{id}`,
  `.../dpoJobs/{id}`; the caller may choose the id, and an id already taken answers 409
  ALREADY_EXISTS (datasets and jobs alike);
- a dataset is `UPLOADING` until its file is uploaded (`:upload`, one multipart request), then
  `READY`; the file is checked as chat (`messages`) or OpenAI preference JSONL;
- job states: `JOB_STATE_VALIDATING` (the engine's validating_files), `JOB_STATE_PENDING`
  (queued), `JOB_STATE_RUNNING`, `JOB_STATE_WRITING_RESULTS` (0.1 s after training), then
  `JOB_STATE_COMPLETED`; `JOB_STATE_FAILED` (with `status.message`), `JOB_STATE_CANCELLED`;
- the output model `accounts/{account}/models/{id}` answers chat once its job is completed.

Open models run on the engine under a stand-in OpenAI model (token counts use its encoding).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from localai.config import ServiceConfig
from localai.engine.chat import ChatBackend
from localai.engine.files import FilesBackend
from localai.engine.jobs import JobsBackend
from localai.engine.models import ModelsBackend
from localai.engine.training_data import check_file
from localai.exceptions import APIError
from localai.store import Store

from .exceptions import FireworksError

STAND_IN = "gpt-4.1-mini-2025-04-14"
BASE_MODELS = ("accounts/fireworks/models/llama-v3p1-8b-instruct", "accounts/fireworks/models/qwen2p5-7b-instruct")
STATES = {"validating_files": "JOB_STATE_VALIDATING", "queued": "JOB_STATE_PENDING", "running": "JOB_STATE_RUNNING",
          "paused": "JOB_STATE_RUNNING", "failed": "JOB_STATE_FAILED", "cancelled": "JOB_STATE_CANCELLED"}
KINDS = {"supervisedFineTuningJobs": "supervised", "dpoJobs": "dpo"}


def iso(timestamp: float | None) -> str | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def check_id(value: str, what: str) -> str:
    if not value or len(value) > 63 or not all(c.islower() or c.isdigit() or c == "-" for c in value):
        raise FireworksError(400, f"{what} id {value!r} must be 1-63 characters of lowercase letters, digits and -.")
    return value


class FireworksJobs(JobsBackend):
    """The engine, noting when a job finished training (writing results follows)."""

    def _succeed(self, job: dict[str, Any]) -> None:
        job["_sim"]["trained_clock"] = time.time()
        super()._succeed(job)


class FireworksBackend:
    """State of the emulated Fireworks account(s)."""

    def __init__(self, config: ServiceConfig) -> None:
        self.store = Store(config.data_dir / "fireworks")
        self.files = FilesBackend(self.store, config.max_file_bytes)
        self.models = ModelsBackend(self.store)
        self.jobs = FireworksJobs(self.store, self.files, self.models,
                                  seconds_per_1k_tokens=config.seconds_per_1k_tokens)
        self.chat = ChatBackend(self.store, self.models, instruction_following=config.instruction_following)
        self.writing_seconds = 0.1


    # --- datasets ----------------------------------------------------------------------------

    def create_dataset(self, account: str, body: dict[str, Any]) -> dict[str, Any]:
        dataset_id = check_id(str(body.get("datasetId") or ""), "dataset")
        name = f"accounts/{account}/datasets/{dataset_id}"
        if self.store.get("fireworks.dataset", name) is not None:
            raise FireworksError(409, f"Dataset {name} already exists.")
        given = body.get("dataset") or {}
        record = {"id": name, "displayName": given.get("displayName") or dataset_id,
                  "format": given.get("format") or "CHAT", "created": time.time(), "_core": None}
        self.store.put("fireworks.dataset", record)
        return self.dataset_view(record)

    def dataset(self, account: str, dataset_id: str) -> dict[str, Any]:
        name = f"accounts/{account}/datasets/{dataset_id}"
        record = self.store.get("fireworks.dataset", name)
        if record is None:
            raise FireworksError(404, f"Dataset {name} not found.")
        return record

    def upload(self, account: str, dataset_id: str, filename: str, content: bytes) -> dict[str, Any]:
        record = self.dataset(account, dataset_id)
        if record["_core"]:
            raise FireworksError(400, f"Dataset {record['id']} is READY; its file cannot be replaced.")
        path = self.files.incoming_path()
        path.write_bytes(content)
        lines, reason = check_file(path, min_examples=3)  # chat or preference pairs: the first line decides
        if reason:
            path.unlink(missing_ok=True)
            raise FireworksError(400, f"The dataset file is not valid: {reason}")
        try:
            core = self.files.store_path(filename=filename or "dataset.jsonl", purpose="fine-tune", path=path)
        except APIError as error:
            raise FireworksError(400, error.message) from None
        record.update(_core=core["id"], _examples=lines, _bytes=len(content))
        self.store.put("fireworks.dataset", record)
        return {"id": record["id"], "object": "file", "bytes": len(content), "created_at": int(record["created"]),
                "filename": filename, "purpose": "fine-tune"}

    def dataset_view(self, record: dict[str, Any]) -> dict[str, Any]:
        view = {"name": record["id"], "displayName": record["displayName"], "format": record["format"],
                "createTime": iso(record["created"]), "state": "READY" if record["_core"] else "UPLOADING",
                "userUploaded": {}}
        if record["_core"]:
            view["exampleCount"] = str(record["_examples"])
        return view

    def list_datasets(self, account: str) -> dict[str, Any]:
        prefix = f"accounts/{account}/datasets/"
        return {"datasets": [self.dataset_view(r) for r in self.store.list("fireworks.dataset", newest_first=True)
                             if r["id"].startswith(prefix)], "totalSize": 0}

    def _core_dataset(self, name: str | None, param: str) -> str:
        record = self.store.get("fireworks.dataset", name or "")
        if record is None or not record["_core"]:
            raise FireworksError(400, f"{param} {name!r} is not a READY dataset of this account.")
        return record["_core"]

    # --- jobs --------------------------------------------------------------------------------

    def create_job(self, account: str, kind: str, job_id: str | None, body: dict[str, Any]) -> dict[str, Any]:
        method = KINDS[kind]
        job_id = check_id(job_id or f"job-{int(time.time() * 1000)}", "job")
        name = f"accounts/{account}/{kind}/{job_id}"
        if self.store.get("fireworks.job", name) is not None:
            raise FireworksError(409, f"Job {name} already exists.")
        config = body.get("trainingConfig") or {} if method == "dpo" else body
        base = config.get("baseModel")
        if base not in BASE_MODELS:
            raise FireworksError(400, f"Base model {base!r} is not available for fine-tuning on this account.")
        epochs = config.get("epochs")
        hyper: dict[str, Any] = {"n_epochs": int(epochs)} if epochs else {}
        beta = ((body.get("lossConfig") or {}).get("klBeta")) if method == "dpo" else None
        if beta is not None:
            hyper["beta"] = beta
        request = {"model": STAND_IN, "training_file": self._core_dataset(body.get("dataset"), "dataset"),
                   "validation_file": self._core_dataset(body["evaluationDataset"], "evaluationDataset")
                   if body.get("evaluationDataset") else None,
                   "method": {"type": method, method: {"hyperparameters": hyper}}}
        core = self.jobs.create_job(request)
        output = config.get("outputModel") or body.get("outputModel") or f"accounts/{account}/models/{job_id}"
        record = {"id": name, "kind": kind, "dataset": body.get("dataset"), "baseModel": base,
                  "outputModel": output, "displayName": body.get("displayName"), "epochs": epochs,
                  "evaluationDataset": body.get("evaluationDataset"), "created": time.time(), "_core": core["id"]}
        self.store.put("fireworks.job", record)
        return self.job_view(record)

    def job(self, account: str, kind: str, job_id: str) -> dict[str, Any]:
        name = f"accounts/{account}/{kind}/{job_id}"
        record = self.store.get("fireworks.job", name)
        if record is None:
            raise FireworksError(404, f"Job {name} not found.")
        return record

    def state(self, record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        core = self.jobs.get(record["_core"])
        if core["status"] != "succeeded":
            return STATES[core["status"]], core
        since = time.time() - core["_sim"].get("trained_clock", 0)
        return ("JOB_STATE_WRITING_RESULTS" if since < self.writing_seconds else "JOB_STATE_COMPLETED"), core

    def job_view(self, record: dict[str, Any]) -> dict[str, Any]:
        state, core = self.state(record)
        view: dict[str, Any] = {
            "name": record["id"], "dataset": record["dataset"], "state": state,
            "createTime": iso(record["created"]), "updateTime": iso(core["finished_at"] or record["created"]),
            "displayName": record["displayName"], "createdBy": "ftflow-local@example.com",
        }
        config = {"baseModel": record["baseModel"], "outputModel": record["outputModel"], "epochs": record["epochs"]}
        if record["kind"] == "dpoJobs":
            view["trainingConfig"] = config
        else:
            view.update(config, evaluationDataset=record["evaluationDataset"])
        if state in ("JOB_STATE_COMPLETED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"):
            view["completedTime"] = iso(core["finished_at"])
        if state == "JOB_STATE_FAILED":
            view["status"] = {"code": "INVALID_ARGUMENT", "message": (core.get("error") or {}).get("message", "")}
        elif state == "JOB_STATE_COMPLETED":
            view["status"] = {"code": "OK", "message": ""}
            view["jobProgress"] = {"percent": 100, "epoch": core["hyperparameters"].get("n_epochs"),
                                   "inputTokens": core["trained_tokens"]}
        return view

    def list_jobs(self, account: str, kind: str) -> dict[str, Any]:
        prefix = f"accounts/{account}/{kind}/"
        jobs = [self.job_view(r) for r in self.store.list("fireworks.job", newest_first=True)
                if r["id"].startswith(prefix)]
        return {kind: jobs, "totalSize": len(jobs)}

    def cancel(self, account: str, kind: str, job_id: str) -> dict[str, Any]:
        record = self.job(account, kind, job_id)
        state, core = self.state(record)
        if core["status"] in ("succeeded", "failed", "cancelled"):
            raise FireworksError(400, f"Job {record['id']} is {state} and cannot be cancelled.")
        self.jobs.cancel_job(core["id"])
        return {}

    # --- chat --------------------------------------------------------------------------------

    def chat_completion(self, body: dict[str, Any]) -> dict[str, Any]:
        model = str(body.get("model"))
        messages = body.get("messages") or []
        if model in BASE_MODELS:
            reply = self.chat.create_chat_completion(model=STAND_IN, messages=messages)
        else:
            record = next((r for r in self.store.list("fireworks.job") if r["outputModel"] == model), None)
            if record is None or self.state(record)[0] != "JOB_STATE_COMPLETED":
                raise FireworksError(404, f"Model not found, inaccessible, and/or not deployed: {model}")
            reply = self.chat.create_chat_completion(model=self.jobs.get(record["_core"])["fine_tuned_model"],
                                                     messages=messages)
        return reply | {"model": model}

