"""Fireworks AI: fine-tunes of open models through the official `fireworks-ai` SDK (1.x); chat through
its OpenAI-compatible `/inference/v1`.

Files are datasets: the content-addressed name `ftflow-<sha256>.jsonl` becomes the dataset id
`ftflow-<first 48 hex digits>` (ids are at most 63 characters), created then uploaded in one
request (files up to 150 MB); a dataset that exists is that file (uploaded into if it is still
`UPLOADING`). Fireworks takes OpenAI's own formats (`messages`; `input`/`preferred_output`/
`non_preferred_output` for DPO), so the bytes are prepare's. Jobs: the caller chooses the job
id, and ftflow chooses `ftflow-<idempotency key>`: the same id again is refused with 409, so
one key is one job (plus the ledger). SFT runs as `supervisedFineTuningJobs`, DPO as `dpoJobs`.
States `JOB_STATE_*` (table in docs/providers.md). No job events, no result files.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import openai

from ftflow.errors import ConfigError, ProviderError, ProviderRefused
from ftflow.providers.base import (
    FileState,
    JobEvent,
    JobSpec,
    JobState,
    Provider,
    RemoteFile,
    RemoteJob,
    UploadProgress,
    error_message,
    status_code,
)

UPLOAD_LIMIT_BYTES = 150 * 1024 * 1024  # datasets.upload: "file sizes up to 150Mb"
JOB_STATES: dict[str, JobState] = {
    "JOB_STATE_CREATING": "pending", "JOB_STATE_VALIDATING": "pending", "JOB_STATE_PENDING": "pending",
    "JOB_STATE_CREATING_INPUT_DATASET": "pending", "JOB_STATE_RE_QUEUEING": "pending", "JOB_STATE_IDLE": "pending",
    "JOB_STATE_RUNNING": "running", "JOB_STATE_WRITING_RESULTS": "running", "JOB_STATE_PAUSED": "running",
    "JOB_STATE_CANCELLING": "running", "JOB_STATE_COMPLETED": "succeeded", "JOB_STATE_EARLY_STOPPED": "succeeded",
    "JOB_STATE_FAILED": "failed", "JOB_STATE_EXPIRED": "failed", "JOB_STATE_CANCELLED": "cancelled",
    "JOB_STATE_DELETING": "cancelled", "JOB_STATE_DELETING_CLEANING_UP": "cancelled",
}
FILE_STATES: dict[str, FileState] = {"UPLOADING": "pending", "READY": "processed"}
KINDS = {"supervised": "supervisedFineTuningJobs", "dpo": "dpoJobs"}


def dataset_id(filename: str) -> str:
    """`ftflow-<sha256>.jsonl` -> `ftflow-<first 48 hex digits>` (a dataset id has at most 63 characters)."""
    return filename.removesuffix(".jsonl")[:55]


def job_id(key: str) -> str:
    return f"ftflow-{key}"


class FireworksProvider(Provider):
    backend = "fireworks"
    key_home = "the job id (`ftflow-<key>`, chosen by ftflow; the same id again is refused with 409) and the ledger"
    refusals: ClassVar[dict[str, str]] = {}

    def __init__(self, settings: Any, api_key: str, client: Any, chat: openai.OpenAI) -> None:
        super().__init__(settings, api_key)
        self.client = client
        self.creator = client.with_options(max_retries=0)
        self.chat_api = chat
        self.account = client.account_id

    @property
    def identity(self) -> str:
        return f"fireworks:{self.client.base_url}:accounts/{self.account}"

    # --- files (datasets) ------------------------------------------------------------------
    def _file(self, dataset: Any) -> RemoteFile:
        state = dataset.state or "UPLOADING"
        return RemoteFile(id=dataset.name, filename=dataset.name.rsplit("/", 1)[-1], bytes=None,
                          state=FILE_STATES.get(state, "pending"), provider_status=state)

    def upload_file(self, path: Path, filename: str, *, progress: UploadProgress) -> RemoteFile:
        from fireworks import ConflictError

        if path.stat().st_size > UPLOAD_LIMIT_BYTES:
            raise ConfigError(f"{path} is {path.stat().st_size:,} bytes; ftflow uploads Fireworks datasets of up "
                              "to 150 MB in one request")
        name = dataset_id(filename)
        try:
            dataset = self.creator.datasets.create(dataset_id=name, dataset={"format": "CHAT", "display_name": name})
        except ConflictError:
            dataset = self.client.datasets.get(name)
        if dataset.state != "READY":
            with open(path, "rb") as f:
                self.creator.datasets.upload(name, file=(filename, f.read()))
            dataset = self.client.datasets.get(name)
        return self._file(dataset)

    def find_file(self, filename: str) -> RemoteFile | None:
        file = self.get_file(f"accounts/{self.account}/datasets/{dataset_id(filename)}")
        return file if file is not None and file.state == "processed" else None

    def get_file(self, file_id: str) -> RemoteFile | None:
        from fireworks import NotFoundError

        try:
            return self._file(self.client.datasets.get(file_id.rsplit("/", 1)[-1]))
        except NotFoundError:
            return None

    def file_text(self, file_id: str) -> str:
        raise ProviderError(f"Fireworks keeps no result files (asked for {file_id})")

    # --- jobs ------------------------------------------------------------------------------
    def _job(self, job: Any) -> RemoteJob:
        dpo = "/dpoJobs/" in job.name
        config = job.training_config if dpo else job
        state = job.state or "JOB_STATE_UNSPECIFIED"
        done = JOB_STATES.get(state) == "succeeded"
        progress = getattr(job, "job_progress", None)
        status = getattr(job, "status", None)
        ended = getattr(job, "completed_time", None)
        return RemoteJob(
            id=job.name, state=JOB_STATES.get(state, "pending"), provider_status=state,
            model=getattr(config, "base_model", None),
            fine_tuned_model=getattr(config, "output_model", None) if done else None,
            trained_tokens=getattr(progress, "input_tokens", None) if done and progress else None,
            hyperparameters={"n_epochs": config.epochs} if getattr(config, "epochs", None) else {},
            error_code=state if state == "JOB_STATE_FAILED" else None,
            error_message=getattr(status, "message", None) if state == "JOB_STATE_FAILED" and status else None,
            key=job.name.rsplit("/", 1)[-1].removeprefix("ftflow-") or None,
            duration_seconds=(ended - job.create_time).total_seconds() if ended and job.create_time else None)

    def _resource(self, kind: str) -> tuple[Any, Any]:
        """(reads, creates) of a job collection."""
        attribute = "dpo_jobs" if kind == "dpoJobs" else "supervised_fine_tuning_jobs"
        return getattr(self.client, attribute), getattr(self.creator, attribute)

    def create_job(self, spec: JobSpec) -> RemoteJob:
        """Create the job under the key's id; a 409 means it exists (this key's job): that job is returned."""
        from fireworks import ConflictError

        if spec.method not in KINDS:
            raise ConfigError(f"Fireworks has no {spec.method} fine-tuning job here (supervised or dpo)")
        base = spec.model.rsplit("/", 1)[-1]
        output = f"accounts/{self.account}/models/{base}-{spec.key[:12]}"
        epochs = spec.hyperparameters.get("n_epochs")
        reads, creates = self._resource(KINDS[spec.method])
        try:
            if spec.method == "dpo":
                loss = {"method": "DPO", **({"kl_beta": spec.hyperparameters["beta"]}
                                            if "beta" in spec.hyperparameters else {})}
                job = creates.create(dataset=spec.training_file, dpo_job_id=job_id(spec.key), loss_config=loss,
                                     display_name=spec.suffix or "ftflow",
                                     training_config={"base_model": spec.model, "output_model": output,
                                                      **({"epochs": epochs} if epochs else {})})
            else:
                extra = {"epochs": epochs} if epochs else {}
                if spec.validation_file:
                    extra["evaluation_dataset"] = spec.validation_file
                job = creates.create(dataset=spec.training_file, base_model=spec.model, output_model=output,
                                     supervised_fine_tuning_job_id=job_id(spec.key),
                                     display_name=spec.suffix or "ftflow", **extra)
        except ConflictError:
            job = reads.get(job_id(spec.key))
        return self._job(job)

    def list_jobs(self, key: str) -> list[RemoteJob]:
        """The job with this key's id, in either collection (the id is the key: no list needed)."""
        from fireworks import NotFoundError

        found = []
        for kind in KINDS.values():
            try:
                found.append(self._job(self._resource(kind)[0].get(job_id(key))))
            except NotFoundError:
                continue
        return found

    def get_job(self, job_id: str) -> RemoteJob | None:
        from fireworks import NotFoundError

        kind = "dpoJobs" if "/dpoJobs/" in job_id else "supervisedFineTuningJobs"
        try:
            return self._job(self._resource(kind)[0].get(job_id.rsplit("/", 1)[-1]))
        except NotFoundError:
            return None

    def list_events(self, job_id: str) -> Iterator[JobEvent]:
        """Fireworks' jobs have no event list (logs are a signed URL)."""
        return iter(())

    def cancel_job(self, job_id: str) -> None:
        kind = "dpoJobs" if "/dpoJobs/" in job_id else "supervisedFineTuningJobs"
        self._resource(kind)[0].cancel(job_id.rsplit("/", 1)[-1], body={})

    # --- serving and errors ----------------------------------------------------------------
    def chat_client(self) -> openai.OpenAI:
        return self.chat_api

    def refusal(self, exc: BaseException) -> ProviderRefused | None:
        refused = super().refusal(exc)
        if refused is None and status_code(exc) == 400 and "base model" in error_message(exc).lower():
            return ProviderRefused(f"Fireworks cannot fine-tune this model; pick another --model "
                                   f"(provider said: {error_message(exc)})")
        return refused
