"""Jobs: create a fine-tuning job exactly once, poll it to the end, collect its metrics.

Exactly once: the idempotency key is derived from (dataset sha256, base model, method and
hyperparameters, suffix) and stored in the job's `metadata`; the ledger records it before
and after the create call; every create (first try, retry, re-run after a crash) first
looks for a live job with that key at the provider (list with the metadata filter).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import openai
from prefect import task

from ftflow.caching import RUN_CACHE
from ftflow.client import describe, make_client
from ftflow.errors import DataError, JobCancelled, JobFailed, JobTimeout
from ftflow.provider import create_once, retry_on_transient
from ftflow.settings import Settings
from tasks.registry import Registry

log = logging.getLogger("ftflow.jobs")
KEY_FIELD = "ftflow_idempotency_key"
RUNNING = ("validating_files", "queued", "running", "paused")
LIVE = (*RUNNING, "succeeded")


def idempotency_key(*, dataset_sha256: str, model: str, method: str, hyperparameters: dict[str, Any],
                    suffix: str | None, nonce: str = "") -> str:
    """A stable key of what the job trains; `nonce` (from --force) makes a new one on purpose."""
    material = json.dumps(
        {"dataset": dataset_sha256, "model": model, "method": method, "hyperparameters": hyperparameters,
         "suffix": suffix, "nonce": nonce}, sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:40]


@dataclass
class JobRequest:
    model: str
    training_file: str
    validation_file: str | None
    dataset_sha256: str
    suffix: str | None = None
    method: str = "supervised"
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    force_nonce: str = ""

    @property
    def key(self) -> str:
        return idempotency_key(dataset_sha256=self.dataset_sha256, model=self.model, method=self.method,
                               hyperparameters=self.hyperparameters, suffix=self.suffix, nonce=self.force_nonce)


def find_live_job(client: openai.OpenAI, key: str, known_job_id: str | None = None) -> Any | None:
    """The job with this key that is running or done (failed/cancelled ones may be redone).

    The ledger's job id first, then the provider's list filtered by metadata; each candidate's
    own metadata is checked too, in case a provider ignores the filter.
    """
    if known_job_id:
        try:
            job = client.fine_tuning.jobs.retrieve(known_job_id)
            if job.status in LIVE:
                return job
        except openai.NotFoundError:
            pass
    for job in client.fine_tuning.jobs.list(metadata={KEY_FIELD: key}, limit=20):
        if (job.metadata or {}).get(KEY_FIELD) == key and job.status in LIVE:
            return job
    return None


def create_job_once(client: openai.OpenAI, registry: Registry, provider: str, request: JobRequest, *,
                    flow_run_id: str | None = None, grace_seconds: float = 2.0) -> tuple[Any, bool]:
    """Return (job, created_now). Attaches to the existing job of this key if there is one."""
    key = request.key
    known = (registry.job_entry(provider, key) or {}).get("job_id")
    registry.record_job(provider, key, job_id=known, status="creating", flow_run_id=flow_run_id)
    method_body = {"type": request.method, request.method: {"hyperparameters": request.hyperparameters}}
    creator = client.with_options(max_retries=0)
    job, created = create_once(
        lambda: find_live_job(client, key, known),
        lambda: creator.fine_tuning.jobs.create(
            model=request.model, training_file=request.training_file, validation_file=request.validation_file,
            suffix=request.suffix, seed=request.seed, method=method_body,
            metadata={KEY_FIELD: key, "ftflow_dataset": request.dataset_sha256[:16]}),
        what="create fine-tuning job", grace_seconds=grace_seconds,
    )
    registry.record_job(provider, key, job_id=job.id, status="created", flow_run_id=flow_run_id)
    log.info("%s fine-tuning job %s (key %s)", "created" if created else "attached to", job.id, key[:12])
    return job, created


# --- polling ---------------------------------------------------------------------------------


class EventCursor:
    """Yields each job event once, oldest first, across polls (cursor: ids already seen)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def new_events(self, client: openai.OpenAI, job_id: str) -> list[Any]:
        fresh = []
        for event in client.fine_tuning.jobs.list_events(job_id, limit=100):  # newest first, auto-paginated
            if event.id in self.seen:
                break
            fresh.append(event)
        self.seen.update(e.id for e in fresh)
        return list(reversed(fresh))


def progress_of(events: list[Any]) -> tuple[int, int] | None:
    """(step, total steps) from the latest metrics event, if any."""
    for event in reversed(events):
        data = event.data or {}
        if getattr(event, "type", None) == "metrics" and "step" in data and "total_steps" in data:
            return int(data["step"]), int(data["total_steps"])
    return None


def poll_job(
    client: openai.OpenAI, job_id: str, *, initial: float, maximum: float, timeout: float,
    on_event: Callable[[Any], None], on_progress: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] = lambda: False,
) -> Any:
    """Poll until the job ends; return it on success, raise JobFailed / JobCancelled / JobTimeout."""
    cursor = EventCursor()
    delay = initial
    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        events = cursor.new_events(client, job_id)
        for event in events:
            on_event(event)
        if on_progress and (progress := progress_of(events)):
            on_progress(*progress)
        if job.status == "succeeded":
            return job
        if job.status == "failed":
            error = job.error
            code = error.code if error else None
            raise JobFailed(f"fine-tuning job {job_id} failed: {code}: {error.message if error else 'no reason'}",
                            job_id=job_id, code=code)
        if job.status == "cancelled":
            raise JobCancelled(f"fine-tuning job {job_id} was cancelled")
        if should_cancel():
            client.fine_tuning.jobs.cancel(job_id)
            raise JobCancelled(f"the flow run was cancelled; cancelled fine-tuning job {job_id}")
        if time.monotonic() > deadline:
            raise JobTimeout(f"fine-tuning job {job_id} is still {job.status} after {timeout:.0f}s")
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(maximum, delay * 1.5)


def training_metrics(client: openai.OpenAI, job: Any) -> dict[str, Any]:
    """Final figures and the loss curve from the job's result file (step_metrics.csv)."""
    if not job.result_files:
        return {"steps": 0, "curve": []}
    text = client.files.content(job.result_files[0]).text
    rows = [{k: float(v) if v not in ("", None) else None for k, v in row.items()}
            for row in csv.DictReader(io.StringIO(text))]
    last = rows[-1] if rows else {}
    return {
        "steps": len(rows),
        "final_train_loss": last.get("train_loss"),
        "final_train_accuracy": last.get("train_accuracy"),
        "final_valid_loss": last.get("valid_loss"),
        "final_valid_mean_token_accuracy": last.get("valid_mean_token_accuracy"),
        "curve": rows,
    }


# --- tasks -----------------------------------------------------------------------------------


@task(name="plan-job", cache_policy=RUN_CACHE)
def plan_job(dataset_dir: str, settings: Settings, train: Any, validation: Any | None, *, n_epochs: int | None,
             seed: int | None, force: bool) -> JobRequest:
    """Return the job request for a prepared dataset folder (its report gives the dataset sha256)."""
    import uuid
    from pathlib import Path

    if train is None:
        raise DataError(f"{dataset_dir}/train.jsonl is empty: nothing to fine-tune on")
    report = json.loads((Path(dataset_dir) / "report.json").read_text("utf-8"))
    prepared_for = report.get("method", "supervised")
    if prepared_for != settings.method:
        raise DataError(f"{dataset_dir} was prepared for method {prepared_for!r}, not {settings.method!r}")
    hyperparameters: dict[str, Any] = {"n_epochs": n_epochs if n_epochs is not None else report["n_epochs"]}
    if settings.method == "dpo":
        hyperparameters["beta"] = settings.dpo_beta
    return JobRequest(
        model=settings.model, training_file=train.file_id,
        validation_file=validation.file_id if validation else None, dataset_sha256=report["dataset_sha256"],
        suffix=settings.suffix, method=settings.method, hyperparameters=hyperparameters,
        seed=seed, force_nonce=uuid.uuid4().hex if force else "",
    )



@task(name="create-job", cache_policy=RUN_CACHE, retries=3, retry_delay_seconds=[2, 10, 30],
      retry_jitter_factor=0.5, retry_condition_fn=retry_on_transient)
def create_job(request: JobRequest, settings: Settings) -> dict[str, Any]:
    """Return the job (created now or attached to) for this request's idempotency key."""
    from prefect.runtime import flow_run

    client = make_client(settings)
    job, created = create_job_once(client, Registry(settings.registry_url), describe(settings, client), request,
                                   flow_run_id=flow_run.get_id())
    return {"job_id": job.id, "created": created, "idempotency_key": request.key, "status": job.status}


def _flow_run_cancelling() -> bool:
    """Whether someone asked Prefect to cancel the current flow run."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    run_id = flow_run.get_id()
    if not run_id:
        return False
    with get_client(sync_client=True) as prefect_client:
        state = prefect_client.read_flow_run(run_id).state
    return bool(state and (state.is_cancelling() or state.is_cancelled()))


@task(name="wait-for-job", cache_policy=RUN_CACHE, retries=2, retry_delay_seconds=[10, 60],
      retry_condition_fn=retry_on_transient)
def wait_for_job(job_id: str, settings: Settings) -> dict[str, Any]:
    """Return the finished job and its training metrics; stream its events into the run log."""
    from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
    from prefect.logging import get_run_logger

    logger = get_run_logger()
    client = make_client(settings)
    progress_id = create_progress_artifact(0.0, key="ftflow-fine-tuning-progress",
                                           description=f"Steps of fine-tuning job {job_id}")
    job = poll_job(
        client, job_id, initial=settings.poll_initial_seconds, maximum=settings.poll_max_seconds,
        timeout=settings.poll_timeout_seconds,
        on_event=lambda e: logger.info("[%s] %s", job_id, e.message),
        on_progress=lambda step, total: update_progress_artifact(progress_id, 100.0 * step / total),
        should_cancel=_flow_run_cancelling if settings.cancel_job_on_flow_cancel else (lambda: False),
    )
    update_progress_artifact(progress_id, 100.0)
    metrics = training_metrics(client, job)
    curve = metrics.pop("curve")
    every = max(1, len(curve) // 200)
    create_table_artifact(curve[::every] + curve[-1:], key="ftflow-loss-curve",
                          description=f"Training metrics of {job.fine_tuned_model}")
    return {"job_id": job.id, "status": job.status, "fine_tuned_model": job.fine_tuned_model,
            "trained_tokens": job.trained_tokens, "hyperparameters": job.hyperparameters.model_dump(),
            "result_files": job.result_files, "metrics": metrics}


def cancel_flow_run_jobs(flow: Any, flow_run: Any, state: Any) -> None:
    """on_cancellation hook: cancel the provider jobs this flow run created or attached to.

    Covers a worker that stops the process on cancellation, where the polling loop cannot
    react. Jobs already finished are left alone.
    """
    from ftflow.settings import get_settings

    settings = get_settings(backend=(flow_run.parameters or {}).get("backend"))
    if not settings.cancel_job_on_flow_cancel:
        return
    client = make_client(settings)
    for entry in Registry(settings.registry_url).jobs_of_flow_run(str(flow_run.id)):
        if entry["job_id"] and client.fine_tuning.jobs.retrieve(entry["job_id"]).status in RUNNING:
            client.fine_tuning.jobs.cancel(entry["job_id"])
            log.info("cancelled fine-tuning job %s with flow run %s", entry["job_id"], flow_run.id)
