"""OpenAI's fine-tuning API through the official `openai` SDK; also the base of `local` and `azure`.

Idempotency key: in the job's `metadata` (`ftflow_idempotency_key`), which the list endpoint
filters on. Files larger than `upload_part_bytes` go through the Uploads API; the parts
already accepted are kept in the registry, so a retry or a re-run resumes the open upload.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import openai

from ftflow.providers.base import (
    KEY_FIELD,
    PURPOSE,
    FileState,
    JobEvent,
    JobSpec,
    JobState,
    Provider,
    RemoteFile,
    RemoteJob,
    UploadProgress,
)

log = logging.getLogger("ftflow.providers.openai")
UPLOAD_LIFETIME_SECONDS = 3600  # an OpenAI upload expires after an hour; resume only well before
JOB_STATES: dict[str, JobState] = {
    "validating_files": "pending", "queued": "pending", "running": "running", "paused": "running",
    "succeeded": "succeeded", "failed": "failed", "cancelled": "cancelled",
}
FILE_STATES: dict[str, FileState] = {"uploaded": "pending", "processed": "processed", "error": "error",
                                     "deleted": "deleted"}


def pages(page: Any, max_pages: int = 50) -> Iterator[Any]:
    """The items of a paginated list, page by page, lazily; stops where a server repeats a page
    (one that ignores `after` would otherwise keep the SDK's auto-pagination going forever)."""
    seen: set[str] = set()
    for _ in range(max_pages):
        first = getattr(page.data[0], "id", None) if page.data else None
        if first is None or first in seen:
            return
        seen.add(first)
        yield from page.data
        if not page.has_next_page():
            return
        page = page.get_next_page()


class OpenAIProvider(Provider):
    backend = "openai"
    key_home = "job metadata (`ftflow_idempotency_key`), list filtered by metadata; and the ledger"
    job_states: ClassVar[dict[str, JobState]] = JOB_STATES
    file_states: ClassVar[dict[str, FileState]] = FILE_STATES
    refusals: ClassVar[dict[str, str]] = {
        "fine_tuning_not_allowed": "this organisation may not create fine-tuning jobs (OpenAI stopped self-serve "
        "fine-tuning; use --backend azure or --backend together)",
        "organization_not_allowed": "this organisation may not create fine-tuning jobs (OpenAI stopped self-serve "
        "fine-tuning; use --backend azure or --backend together)",
        "model_not_available": "this model cannot be fine-tuned by this provider; pick another --model",
        "invalid_api_key": "the provider rejected the API key",
    }
    # 429 `daily_rate_limit_exceeded`: "... reached the maximum of N fine-tuning requests per day
    # for the model ..." (johny-b/llmcomp#58); it frees up as the day's jobs age out.
    quota_codes: ClassVar[frozenset[str]] = frozenset({"daily_rate_limit_exceeded"})
    # "you can only have 3 simultaneous runs" (johny-b/llmcomp#70; GET /v1/fine_tuning/model_limits).
    job_slots: ClassVar[int | None] = 3
    # POST /v1/moderations, free of charge (the local service emulates it).
    moderation_model: ClassVar[str | None] = "omni-moderation-latest"
    supports_uploads = True

    def __init__(self, settings: Any, api_key: str, client: openai.OpenAI) -> None:
        super().__init__(settings, api_key)
        self.client = client  # reads: the SDK retries them (they are idempotent)
        self.creator = client.with_options(max_retries=0)  # creates: ftflow/exactly_once.py retries them

    @property
    def identity(self) -> str:
        return f"{self.backend}:{self.client.base_url}"

    # --- files -----------------------------------------------------------------------------
    def _file(self, file: Any) -> RemoteFile:
        return RemoteFile(id=file.id, filename=file.filename, bytes=file.bytes,
                          state=self.file_states.get(file.status, "pending"), provider_status=file.status,
                          detail=getattr(file, "status_details", None))

    def upload_file(self, path: Path, filename: str, *, progress: UploadProgress) -> RemoteFile:
        size = path.stat().st_size
        part_bytes = self.settings.upload_part_bytes
        if size <= part_bytes or not self.supports_uploads:
            with open(path, "rb") as f:
                return self._file(self.creator.files.create(file=(filename, f.read()), purpose=PURPOSE))
        return self._file(self._upload_in_parts(path, filename, size, part_bytes, progress))

    def _upload_in_parts(self, path: Path, filename: str, size: int, part_bytes: int,
                         progress: UploadProgress) -> Any:
        """Uploads API: parts can be sent twice harmlessly (only the listed ones count), so they retry."""
        state = progress.load()
        if state is None or state["part_bytes"] != part_bytes:
            upload = self.client.uploads.create(bytes=size, filename=filename, mime_type="text/jsonl",
                                                purpose=PURPOSE)
            state = {"upload_id": upload.id, "part_bytes": part_bytes, "part_ids": [],
                     "expires_at": time.time() + UPLOAD_LIFETIME_SECONDS - 300}
            progress.save(**state)
        elif state["part_ids"]:
            log.info("resuming upload %s of %s after %d accepted parts", state["upload_id"], filename,
                     len(state["part_ids"]))
        md5 = hashlib.md5()
        part_ids = list(state["part_ids"])
        with open(path, "rb") as f:
            for index in range(-(-size // part_bytes)):
                chunk = f.read(part_bytes)
                md5.update(chunk)
                if index < len(part_ids):
                    continue  # accepted before
                part_ids.append(self.client.uploads.parts.create(upload_id=state["upload_id"], data=chunk).id)
                progress.save(**{**state, "part_ids": part_ids})
        try:
            return self.creator.uploads.complete(upload_id=state["upload_id"], part_ids=part_ids,
                                                 md5=md5.hexdigest()).file
        except openai.NotFoundError:
            progress.drop()  # expired or cancelled meanwhile: the next attempt starts afresh
            raise

    def find_file(self, filename: str) -> RemoteFile | None:
        for file in pages(self.client.files.list(purpose=PURPOSE)):
            if file.filename == filename and self.file_states.get(file.status) not in ("error", "deleted"):
                return self._file(file)
        return None

    def get_file(self, file_id: str) -> RemoteFile | None:
        try:
            return self._file(self.client.files.retrieve(file_id))
        except openai.NotFoundError:
            return None

    def file_text(self, file_id: str) -> str:
        return self.client.files.content(file_id).text

    # --- jobs ------------------------------------------------------------------------------
    def _job(self, job: Any) -> RemoteJob:
        error = getattr(job, "error", None)
        hyper = getattr(job, "hyperparameters", None)
        return RemoteJob(
            id=job.id, state=self.job_states.get(job.status, "pending"), provider_status=job.status, model=job.model,
            fine_tuned_model=job.fine_tuned_model, trained_tokens=job.trained_tokens,
            hyperparameters=hyper.model_dump(exclude_none=True) if hyper is not None else {},
            result_files=list(job.result_files or []), error_code=getattr(error, "code", None) if error else None,
            error_message=getattr(error, "message", None) if error else None,
            error_param=getattr(error, "param", None) if error else None, key=self._key_of(job),
            duration_seconds=job.finished_at - job.created_at if getattr(job, "finished_at", None) else None)

    def _key_of(self, job: Any) -> str | None:
        return (getattr(job, "metadata", None) or {}).get(KEY_FIELD)

    def _create_arguments(self, spec: JobSpec) -> dict[str, Any]:
        return {"model": spec.model, "training_file": spec.training_file, "validation_file": spec.validation_file,
                "suffix": spec.suffix, "seed": spec.seed,
                "method": {"type": spec.method, spec.method: {"hyperparameters": spec.hyperparameters}},
                "metadata": {KEY_FIELD: spec.key, "ftflow_dataset": spec.dataset_sha256[:16]}}

    def create_job(self, spec: JobSpec) -> RemoteJob:
        return self._job(self.creator.fine_tuning.jobs.create(**self._create_arguments(spec)))

    def list_jobs(self, key: str) -> list[RemoteJob]:
        return [self._job(job) for job in pages(self.client.fine_tuning.jobs.list(metadata={KEY_FIELD: key},
                                                                                 limit=20))]

    def get_job(self, job_id: str) -> RemoteJob | None:
        try:
            return self._job(self.client.fine_tuning.jobs.retrieve(job_id))
        except openai.NotFoundError:
            return None

    def list_events(self, job_id: str) -> Iterator[JobEvent]:
        for e in pages(self.client.fine_tuning.jobs.list_events(job_id, limit=100)):
            yield JobEvent(id=e.id, message=e.message, type=getattr(e, "type", None), data=e.data or None)

    def cancel_job(self, job_id: str) -> None:
        self.client.fine_tuning.jobs.cancel(job_id)

    # --- serving ---------------------------------------------------------------------------
    def chat_client(self) -> openai.OpenAI:
        return self.client
