"""Together AI: fine-tunes of open models through the official `together` SDK; chat through `/v1`.

Files: `files.upload` sends a path and names the file after it, so the content-addressed
name comes from a hard link (or copy) named `ftflow-<sha256>.jsonl`. Jobs: `/v1/fine-tunes`
with Together's own states (table in docs/providers.md). No job metadata: the idempotency
key lives in the **suffix** (`<suffix>-<10-character key tag>`, which Together echoes in the
job and puts into the output model name) and in the ledger. Events have no ids; their id
here is a digest of (time, type, message). There is no result file: the loss curve is left
empty. The model is served by Together's OpenAI-compatible chat endpoint under its output name.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import openai

from ftflow.errors import ProviderRefused
from ftflow.providers.azure import tag_in
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
    key_tag,
    status_code,
    tagged_suffix,
)

SUFFIX_LIMIT = 40
JOB_STATES: dict[str, JobState] = {
    "pending": "pending", "queued": "pending", "running": "running", "compressing": "running",
    "uploading": "running", "cancel_requested": "running", "cancelled": "cancelled", "error": "failed",
    "completed": "succeeded",
}
FILE_STATES: dict[str, FileState] = {
    "PENDING": "pending", "QUEUED": "pending", "RUNNING": "pending", "COMPLETED": "processed", "FAILED": "error",
    "INVALID_FORMAT": "error",
}


class TogetherProvider(Provider):
    backend = "together"
    key_home = "the suffix (`<suffix>-<10-character key tag>`, echoed in the job and its output model name) " \
               "and the ledger; no job metadata"
    refusals: ClassVar[dict[str, str]] = {
        "model_not_supported": "Together cannot fine-tune this model; pick one of its fine-tunable models "
        "(docs.together.ai, fine-tuning models)",
    }

    def __init__(self, settings: Any, api_key: str, client: Any, chat: openai.OpenAI) -> None:
        super().__init__(settings, api_key)
        self.client = client
        self.creator = client.with_options(max_retries=0)
        self.chat_api = chat  # not `chat`: that is Provider.chat, the neutral chat interface

    @property
    def identity(self) -> str:
        return f"together:{self.client.base_url}"

    # --- files -----------------------------------------------------------------------------
    def _file(self, file: Any) -> RemoteFile:
        status = file.processing_status or "COMPLETED"  # absent on older answers: usable once listed
        report = getattr(file, "validation_report", None)
        return RemoteFile(id=file.id, filename=file.filename, bytes=file.bytes,
                          state=FILE_STATES.get(status, "pending"), provider_status=status,
                          detail=getattr(report, "error", None) if report else None)

    def upload_file(self, path: Path, filename: str, *, progress: UploadProgress) -> RemoteFile:
        with tempfile.TemporaryDirectory() as folder:
            named = Path(folder) / filename
            try:
                os.link(path, named)
            except OSError:  # another file system
                shutil.copyfile(path, named)
            return self._file(self.creator.files.upload(named, purpose="fine-tune", check=False))

    def find_file(self, filename: str) -> RemoteFile | None:
        for file in self.client.files.list().data:
            if file.filename == filename and FILE_STATES.get(file.processing_status or "COMPLETED") != "error":
                return self._file(file)
        return None

    def get_file(self, file_id: str) -> RemoteFile | None:
        from together import NotFoundError

        try:
            return self._file(self.client.files.retrieve(file_id))
        except NotFoundError:
            return None

    def file_text(self, file_id: str) -> str:
        return self.client.files.content(file_id).text()

    # --- jobs ------------------------------------------------------------------------------
    def _job(self, job: Any) -> RemoteJob:
        output = getattr(job, "x_model_output_name", None) or getattr(job, "output_name", None)
        status = str(getattr(job.status, "value", job.status))  # create answers with the SDK's enum
        done = status == "completed"
        return RemoteJob(
            id=job.id, state=JOB_STATES.get(status, "pending"), provider_status=status, model=job.model,
            fine_tuned_model=output if done else None,
            trained_tokens=getattr(job, "token_count", None) if done else None,
            hyperparameters={"n_epochs": job.n_epochs} if getattr(job, "n_epochs", None) is not None else {},
            error_code="error" if status == "error" else None,
            error_message=_last_error(job) if status == "error" else None,
            key=tag_in(getattr(job, "suffix", None) or output or "") or None)

    def create_job(self, spec: JobSpec) -> RemoteJob:
        arguments: dict[str, Any] = {
            "training_file": spec.training_file, "model": spec.model,
            "suffix": tagged_suffix(spec.suffix, spec.key, SUFFIX_LIMIT), "random_seed": spec.seed,
            "training_method": "dpo" if spec.method == "dpo" else "sft",
        }
        if spec.validation_file:
            arguments.update(validation_file=spec.validation_file, n_evals=1)
        if "n_epochs" in spec.hyperparameters:
            arguments["n_epochs"] = spec.hyperparameters["n_epochs"]
        if spec.method == "dpo" and "beta" in spec.hyperparameters:
            arguments["dpo_beta"] = spec.hyperparameters["beta"]
        elif spec.method != "dpo":
            arguments["train_on_inputs"] = "auto"  # the SDK's default, said outright: it warns on every job otherwise
        return self._job(self.creator.fine_tuning.create(**arguments))

    def list_jobs(self, key: str) -> list[RemoteJob]:
        return [self._job(job) for job in self.client.fine_tuning.list().data]

    def find_job(self, key: str, known_job_id: str | None = None) -> RemoteJob | None:
        job = super().find_job(key_tag(key), known_job_id)
        if job is not None:
            job.key = key
        return job

    def get_job(self, job_id: str) -> RemoteJob | None:
        from together import NotFoundError

        try:
            return self._job(self.client.fine_tuning.retrieve(job_id))
        except NotFoundError:
            return None

    def list_events(self, job_id: str) -> Iterator[JobEvent]:
        events = self.client.fine_tuning.list_events(job_id).data  # oldest first
        for event in reversed(events):
            digest = hashlib.sha256(f"{event.created_at}|{event.type}|{event.message}".encode()).hexdigest()[:16]
            data = {"step": event.step, "total_steps": event.total_steps} if event.total_steps else None
            yield JobEvent(id=digest, message=event.message, type="metrics" if data else str(event.type), data=data)

    def cancel_job(self, job_id: str) -> None:
        self.client.fine_tuning.cancel(job_id)

    # --- serving and errors ----------------------------------------------------------------
    def chat_client(self) -> openai.OpenAI:
        return self.chat_api

    def refusal(self, exc: BaseException) -> ProviderRefused | None:
        refused = super().refusal(exc)
        if refused is None and status_code(exc) in (400, 404) and "not supported" in error_message(exc).lower():
            return ProviderRefused(f"{self.refusals['model_not_supported']} (provider said: {error_message(exc)})")
        return refused


def _last_error(job: Any) -> str | None:
    for event in reversed(getattr(job, "events", None) or []):
        if getattr(event, "level", None) == "error" or event.type in ("job_error", "job_failed"):
            return event.message
    return None
