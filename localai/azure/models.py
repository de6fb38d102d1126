"""Azure OpenAI's resource: state on the shared engine, and Azure's view of it.

One emulated Azure OpenAI resource with its own store (files, jobs, models, deployments),
driven by the same job engine as the OpenAI dialect. What differs is mapped here, at the
edge (sources: the 2024-10-21 authoring spec in tests/data/, providers-2026.md):

- job states: `pending` (the engine's validating_files and queued), `running`, `succeeded`,
  `failed`, `cancelled` (and `paused` on the v1 surface); never `validating_files` or `queued`;
- `organization_id` is null, `result_files` null until there are results;
- one running job per resource: further jobs stay `pending` until it ends;
- files: `pending` for a moment after upload, then `processed` or `error`; quotas of 50 files
  and 1 GB per resource;
- fine-tuned models are named `<base>.ft-<job>[-<suffix>]` and answer only through a
  deployment (see arm.py).
"""

from __future__ import annotations

import re
import time
from typing import Any

from localai.config import ServiceConfig
from localai.engine.chat import ChatBackend
from localai.engine.files import FilesBackend
from localai.engine.jobs import JobsBackend
from localai.engine.models import ModelsBackend, base_models, base_of
from localai.store import Store, public

from .exceptions import AzureError, deployment_not_found, invalid, quota_exceeded

STATUS = {"validating_files": "pending", "queued": "pending"}  # others keep the engine's name
ACTIVE = ("running", "paused")
SUFFIX = re.compile(r"^[A-Za-z0-9_-]{1,40}$")  # spec: up to 40 characters (a-z, A-Z, 0-9, - and _)
TRAINING_TYPES = {"standard": "Standard", "globalstandard": "GlobalStandard", "developer": "Developer"}
SKUS = {"standard", "globalstandard", "developertier"}
GB = 1024**3


def training_type(value: Any) -> str:
    """The job's training type; Azure refuses a job without one, with a misleading message."""
    if value is None:
        # What Azure answers when trainingType is left out (litellm#24687, azure-docs#116776).
        raise invalid("The specified base model does not support fine-tuning.", "model")
    if value == 1:  # litellm sends the number 1 (litellm#24687)
        return "Standard"
    if isinstance(value, str) and value.lower() in TRAINING_TYPES:
        return TRAINING_TYPES[value.lower()]
    raise invalid(f"trainingType must be one of {', '.join(TRAINING_TYPES.values())}; got {value!r}.", "trainingType")


class AzureJobs(JobsBackend):
    """The engine with Azure's naming and its one-running-job quota."""

    def _start(self, job: dict[str, Any]) -> None:
        if any(other["status"] in ACTIVE for other in self.store.list("job") if other["id"] != job["id"]):
            return  # stays queued, shown as pending, until the running job ends
        super()._start(job)

    def _model_id(self, job: dict[str, Any]) -> str:
        suffix = job.get("_suffix")
        return f"{base_of(job['model'])}.ft-{job['id'].removeprefix('ftjob-')}" + (f"-{suffix}" if suffix else "")


class AzureBackend:
    """State of the emulated Azure OpenAI resource."""

    def __init__(self, config: ServiceConfig) -> None:
        self.store = Store(config.data_dir / "azure")
        self.files = FilesBackend(self.store, min(config.max_file_bytes, 512 * 1024 * 1024))
        self.models = ModelsBackend(self.store)
        self.jobs = AzureJobs(self.store, self.files, self.models, seconds_per_1k_tokens=config.seconds_per_1k_tokens,
                              max_running_jobs=config.max_running_jobs)
        self.chat = ChatBackend(self.store, self.models, instruction_following=config.instruction_following)
        self.max_files = 50
        self.max_total_bytes = 1 * GB
        self.file_processing_seconds = 0.1
        self.deploy_seconds = 0.2


    # --- files -----------------------------------------------------------------------------

    def create_file(self, *, filename: str, purpose: str, content: bytes) -> dict[str, Any]:
        if purpose != "fine-tune":
            raise invalid(f"Purpose '{purpose}' is not supported for uploads here; use 'fine-tune'.", "purpose")
        if not filename.endswith(".jsonl"):
            raise invalid("Only JSON Lines (.jsonl) files can be uploaded for fine-tuning.", "file")
        if len(content) > self.files.max_file_bytes:
            raise invalid(f"The file is larger than {self.files.max_file_bytes} bytes.", "file")
        uploaded = [f for f in self.store.list("file") if f["purpose"] == "fine-tune"]
        if len(uploaded) >= self.max_files:
            raise quota_exceeded(f"This resource already has {len(uploaded)} files; the quota is {self.max_files}.")
        if sum(f["bytes"] for f in uploaded) + len(content) > self.max_total_bytes:
            raise quota_exceeded(f"The files of this resource would exceed the quota of {self.max_total_bytes} bytes.")
        record = self.files.store_file(filename=filename, purpose=purpose, content=content)
        with self.store.transaction():
            stored = self.store.get("file", record["id"])
            assert stored is not None
            stored["_processing_until"] = time.time() + self.file_processing_seconds
            self.store.put("file", stored)
        return self.file_view(stored)

    def file_view(self, record: dict[str, Any]) -> dict[str, Any]:
        view = public(record)
        if time.time() < record.get("_processing_until", 0):
            view["status"] = "pending"
            view.pop("status_details", None)
        return view

    def retrieve_file(self, file_id: str) -> dict[str, Any]:
        return self.file_view(self.files.get(file_id))

    def list_files(self, purpose: str | None) -> dict[str, Any]:
        records = self.store.list("file", newest_first=True)
        data = [self.file_view(r) for r in records if purpose is None or r["purpose"] == purpose]
        return {"object": "list", "data": data}

    def file_content(self, file_id: str) -> bytes:
        self.files.get(file_id)
        return self.store.blob_path(file_id).read_bytes()

    # --- jobs ------------------------------------------------------------------------------

    def create_job(self, body: dict[str, Any], *, keep_metadata: bool) -> dict[str, Any]:
        kind = training_type(body.get("trainingType"))
        model = body["model"]
        if base_of(model) not in base_models():
            raise invalid(f"The base model '{model}' is not available for fine-tuning on this resource.", "model")
        suffix = body.get("suffix")
        if suffix is not None and not SUFFIX.match(suffix):
            raise invalid("The suffix can contain up to 40 characters (a-z, A-Z, 0-9, - and _).", "suffix")
        request = {
            key: body.get(key)
            for key in ("model", "training_file", "validation_file", "hyperparameters", "suffix", "seed", "method")
        }
        if keep_metadata:  # the v1 surface takes metadata; the dated schema has none
            request["metadata"] = body.get("metadata")
        job = self.jobs.create_job(request)
        with self.store.transaction():
            stored = self.store.get("job", job["id"])
            assert stored is not None
            stored["_training_type"] = kind
            self.store.put("job", stored)
        return stored

    def job_view(self, job: dict[str, Any], *, v1: bool) -> dict[str, Any]:
        """A job as Azure shows it: its states and nulls; the dated schema has no metadata or method."""
        hyper = {k: v for k, v in job["hyperparameters"].items() if v != "auto"}
        view = {
            "object": "fine_tuning.job",
            "id": job["id"],
            "created_at": job["created_at"],
            "status": STATUS.get(job["status"], job["status"]),
            "model": job["model"],
            "fine_tuned_model": job["fine_tuned_model"],
            "training_file": job["training_file"],
            "validation_file": job["validation_file"],
            "result_files": job["result_files"] or None,
            "finished_at": job["finished_at"],
            "organization_id": None,
            "trained_tokens": job["trained_tokens"],
            "error": job["error"],
            "estimated_finish": job["estimated_finish"],
            "hyperparameters": hyper,
            "suffix": job.get("_suffix"),
            "seed": job["seed"],
        }
        if v1:
            view.update(metadata=job.get("metadata"), method=job.get("method"), integrations=[])
        return view

    # --- deployments and chat -------------------------------------------------------------

    def deployed_model(self, model: dict[str, Any]) -> str:
        """The model a deployment's `properties.model` names: a fine-tuned id, or a base name and version."""
        name, version = model.get("name"), model.get("version")
        if model.get("format") != "OpenAI" or not isinstance(name, str):
            raise AzureError(
                400, "InvalidResourceProperties", "properties.model needs format 'OpenAI' and the model's name."
            )
        candidates = [f"{name}-{version}", name] if version else [name]
        for candidate in candidates:
            if candidate in base_models() or self.store.get("model", candidate) is not None:
                return candidate
        raise AzureError(
            400,
            "DeploymentModelNotSupported",
            f"The model '{name}' (version '{version}') does not exist on this resource or cannot be deployed.",
        )

    def put_deployment(self, name: str, body: dict[str, Any], *, scope: str) -> tuple[dict[str, Any], bool]:
        sku = body.get("sku") or {}
        if str(sku.get("name", "")).lower() not in SKUS or not isinstance(sku.get("capacity", 1), int):
            raise AzureError(
                400, "InvalidResourceProperties", "sku.name must be Standard, GlobalStandard or DeveloperTier."
            )
        model = (body.get("properties") or {}).get("model") or {}
        target = self.deployed_model(model)
        existing = self.store.get("deployment", name)
        deployment = {
            "id": name,
            "_resource_id": f"{scope}/deployments/{name}",
            "_model": target,
            "_ready_at": time.time() + self.deploy_seconds,
            "sku": {"name": sku["name"], "capacity": sku.get("capacity", 1)},
            "model": model,
        }
        self.store.put("deployment", deployment)
        return self.deployment_view(deployment), existing is None

    def deployment_view(self, deployment: dict[str, Any]) -> dict[str, Any]:
        ready = time.time() >= deployment["_ready_at"]
        return {
            "id": deployment["_resource_id"],
            "name": deployment["id"],
            "type": "Microsoft.CognitiveServices/accounts/deployments",
            "sku": deployment["sku"],
            "properties": {
                "model": deployment["model"],
                "provisioningState": "Succeeded" if ready else "Creating",
            },
        }

    def get_deployment(self, name: str) -> dict[str, Any]:
        deployment = self.store.get("deployment", name)
        if deployment is None:
            raise AzureError(404, "DeploymentNotFound", f"Deployment '{name}' was not found on this account.")
        return deployment

    def delete_deployment(self, name: str) -> None:
        self.get_deployment(name)
        self.store.delete("deployment", name)

    def chat_completion(self, deployment_name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Inference goes through a ready deployment; a bare model name answers nothing on Azure."""
        deployment = self.store.get("deployment", deployment_name)
        if deployment is None or time.time() < deployment["_ready_at"]:
            raise deployment_not_found()
        return self.chat.create_chat_completion(model=deployment["_model"], messages=body.get("messages") or [])
