"""Jobs: create a fine-tuning job exactly once, poll it to the end, collect its metrics.

Exactly once: the idempotency key is derived from (dataset sha256, base model, method and
hyperparameters, suffix) and a generation (`JobSpec.key`, ftflow/providers/base.py); the
provider keeps it where it can (job metadata, or a suffix tag: see ftflow/providers/) and the
ledger keeps it always. The create itself goes through ftflow/exactly_once.py (lookup ->
lease -> create -> record).

Generations and `--force`: `--force` means "train although the data is unchanged", never
"ignore a job in flight". A ledger row whose job no run has consumed yet (no run record
names it) is in flight: every run of the same data and settings attaches to it, with or
without `--force`. Only when none is in flight does `--force` start the next generation.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from prefect import task

from ftflow.caching import RUN_CACHE
from ftflow.errors import DataError, JobCancelled, JobFailed, JobTimeout, ProviderRefused
from ftflow.exactly_once import LeaseTimeout, OncePolicy, ensure_once, one_of, owner_is_dead
from ftflow.providers.base import (
    RUNNING,
    JobEvent,
    JobSpec,
    Provider,
    RemoteJob,
    error_code,
    error_message,
    retry_after_seconds,
    retry_on_transient,
    status_code,
)
from ftflow.run_resources import RunResources
from ftflow.settings import Settings
from ftflow.store.ledger import Ledger

log = logging.getLogger("ftflow.jobs")
T = TypeVar("T")
FINISHED = ("failed", "cancelled", "not_created")  # ledger states that nothing can attach to


def resolve_generation(ledger: Ledger, provider: str, spec: JobSpec, *, force: bool) -> JobSpec:
    """The spec with the generation to use: the one in flight if any, else 0 or (with force) the next."""
    rows = ledger.job_family(provider, spec.family)
    in_flight = [r for r in rows if r["consumed_at"] is None and r["status"] not in FINISHED]
    if in_flight:
        generation = in_flight[-1]["generation"] or 0
        if generation or force:
            log.info("attaching to the unfinished job of generation %d (key %s)", generation,
                     in_flight[-1]["idempotency_key"][:12])
        return replace(spec, generation=generation)
    if not force or not rows:
        return replace(spec, generation=0)
    return replace(spec, generation=max(r["generation"] or 0 for r in rows) + 1)


@dataclass(frozen=True)
class QuotaWait:
    """How long a quota refusal (a daily job limit) is waited out, and the backoff between tries."""

    seconds: float = 0.0
    initial_seconds: float = 60.0
    max_seconds: float = 1800.0

    @classmethod
    def from_settings(cls, settings: Settings) -> QuotaWait:
        return cls(settings.quota_wait_seconds, settings.quota_retry_initial_seconds, settings.quota_retry_max_seconds)


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run's logger (its lines are in the UI), or this module's outside a run."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return log


def waiting_out_quota(provider: Provider, quota: QuotaWait, create: Callable[[], T]) -> T:
    """Return `create()`; a quota refusal is retried with backoff (or the provider's Retry-After) until the deadline.

    After it, ProviderRefused quotes the provider's own error. Other errors pass through at once.
    """
    deadline = time.monotonic() + quota.seconds
    delay = quota.initial_seconds
    while True:
        try:
            return create()
        except Exception as exc:
            if not provider.is_quota_refusal(exc):
                raise
            said = f"{status_code(exc)} {error_code(exc)}: {error_message(exc)}"
            left = deadline - time.monotonic()
            if left <= 0:
                waited = (f"still refused the fine-tuning job after waiting {quota.seconds:g} s (quota_wait_seconds)"
                          if quota.seconds else "refused the fine-tuning job (quota_wait_seconds = 0: not waited out)")
                raise ProviderRefused(f"the provider's quota {waited}; provider said ({said})") from None
            retry_after = retry_after_seconds(exc)
            wait = min(left, retry_after if retry_after is not None else delay)
            run_logger().warning("waiting for a job slot on %s: the provider refused the job (%s); trying again "
                                 "in %.0f s, for %.0f s more at most", provider.backend, said, wait, left)
            time.sleep(wait)
            delay = min(quota.max_seconds, delay * 2)


@contextmanager
def job_slot(settings: Settings, resources: RunResources) -> Iterator[None]:
    """Hold one job slot of the backend account inside the block (creating and polling its job).

    There are `job_slots` slots, by default the provider's documented limit (OpenAI 3, Azure 1);
    a provider without one holds nothing. Slots are leases in the ledger, per account, so every
    run sharing the ledger shares them, and a killed run's slot is taken over as soon as its
    process is seen gone (or its lease runs out, seen from another machine). A run that finds
    every slot taken says so in its log ("waiting for a job slot on <backend>") and waits, for
    `quota_wait_seconds` at most.
    """
    provider = resources.provider
    slots = settings.job_slots or provider.job_slots
    if slots is None:
        yield
        return
    logger = run_logger()

    def waiting(held: int) -> None:
        logger.info("waiting for a job slot on %s: %d of %d in use (job_slots)", provider.backend, held, slots)

    with ExitStack() as held:
        try:
            waited = held.enter_context(one_of(resources.ledger, "job-slot", provider.identity, slots,
                                               lease_seconds=settings.lease_seconds,
                                               wait_seconds=settings.quota_wait_seconds, on_wait=waiting))
        except LeaseTimeout:
            raise ProviderRefused(f"no job slot on {provider.backend} came free within "
                                  f"{settings.quota_wait_seconds:g} s (quota_wait_seconds): all {slots} stayed in "
                                  "use (job_slots)") from None
        if waited:
            logger.info("got a job slot on %s after waiting %.0f s", provider.backend, waited)
        yield


def create_job_once(provider: Provider, ledger: Ledger, spec: JobSpec, *, policy: OncePolicy, force: bool = False,
                    flow_run_id: str | None = None,
                    quota: QuotaWait = QuotaWait()) -> tuple[RemoteJob, bool, JobSpec]:  # noqa: B008 - frozen
    """Return (job, created_now, spec at the generation used). Attaches to the existing job of its key if there is one.

    `force`: train anew although the data is unchanged, unless a job of it is in flight (module docstring).
    A quota refusal is waited out for `quota.seconds` (default: not at all).
    """
    spec = resolve_generation(ledger, provider.identity, spec, force=force)
    key = spec.key
    row = {"family": spec.family, "generation": spec.generation, "flow_run_id": flow_run_id}
    known = (ledger.job_entry(provider.identity, key) or {}).get("job_id")
    with provider.explained():
        job, created = waiting_out_quota(provider, quota, lambda: ensure_once(
            ledger, kind="job", provider=provider.identity, key=key,
            lookup=lambda: provider.find_job(key, known),
            create=lambda: provider.create_job(spec),
            classify=provider.outcome, policy=policy, what="create fine-tuning job",
            on_creating=lambda: ledger.record_job(provider.identity, key, status="creating", **row),
        ))
    ledger.record_job(provider.identity, key, job_id=job.id, status=job.state, **row)
    log.info("%s fine-tuning job %s (key %s)", "created" if created else "attached to", job.id, key[:12])
    return job, created, spec


def reconcile_creating(provider: Provider, ledger: Ledger) -> list[str]:
    """Resolve ledger rows left `creating` by a dead run: the job id if the provider has it, else not_created."""
    fixed = []
    for row in ledger.jobs_in_status(provider.identity, "creating"):
        holder = ledger.lease_holder("job", provider.identity, row["idempotency_key"])
        if holder and not owner_is_dead(holder["owner"]) and holder["expires_at"] > time.time():
            continue  # a live run is creating it right now
        job = provider.find_job(row["idempotency_key"])
        ledger.record_job(provider.identity, row["idempotency_key"], job_id=job.id if job else None,
                            status=job.state if job else "not_created")
        fixed.append(f"{row['idempotency_key'][:12]} -> {job.id if job else 'not created'}")
    return fixed


# --- polling ---------------------------------------------------------------------------------


class EventCursor:
    """Yields each job event once, oldest first, across polls, retries and re-runs (cursor: the last id)."""

    def __init__(self, last_id: str | None = None) -> None:
        self.last_id = last_id

    def new_events(self, provider: Provider, job_id: str) -> list[JobEvent]:
        fresh = []
        for event in provider.list_events(job_id):  # newest first
            if event.id == self.last_id:
                break
            fresh.append(event)
        if fresh:
            self.last_id = fresh[0].id
        return list(reversed(fresh))


class JobEventLog:
    """Which job events reach the run log, so a job reads in about 30 lines, not one per step.

    Every message event is logged, except one repeating the kind of the event before it
    (three "Checkpoint created" in a row make one line); metrics events every `every` steps,
    chosen so a job logs about `metric_lines` of them, plus the last step. Which events were
    logged already (by an earlier attempt, or the run that created the job) is the ledger's
    event cursor, kept by `wait_for_job`.
    """

    def __init__(self, metric_lines: int = 20) -> None:
        self.metric_lines = metric_lines
        self.last_kind: str | None = None

    @staticmethod
    def kind_of(event: JobEvent) -> str:
        """`metrics`, or the message without its numbers ("Checkpoint created at step #")."""
        if getattr(event, "type", None) == "metrics":
            return "metrics"
        return re.sub(r"\S*\d\S*", "#", event.message)

    def line(self, event: JobEvent) -> str | None:
        """The log line for this new event, or None when it is left out."""
        kind, previous = self.kind_of(event), self.last_kind
        self.last_kind = kind
        if kind != "metrics":
            return event.message if kind != previous else None
        data = event.data or {}
        step, total = int(data.get("step", 0)), int(data.get("total_steps") or 0)
        every = max(1, -(-total // self.metric_lines))
        if step == 1 or step % every == 0 or step == total:
            return f"step {step}/{total}: " + ", ".join(
                f"{name} {data[name]:.3f}" for name in ("train_loss", "valid_loss") if data.get(name) is not None)
        return None


def progress_of(events: list[JobEvent]) -> tuple[int, int] | None:
    """(step, total steps) from the latest metrics event, if any."""
    for event in reversed(events):
        data = event.data or {}
        if event.type == "metrics" and "step" in data and "total_steps" in data:
            return int(data["step"]), int(data["total_steps"])
    return None


def poll_job(
    provider: Provider, job_id: str, *, initial: float, maximum: float, deadline: float,
    on_event: Callable[[JobEvent], None], on_progress: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] = lambda: False, cursor: EventCursor | None = None,
    on_cursor: Callable[[str], None] = lambda last_id: None,
) -> RemoteJob:
    """Poll until the job ends or the wall-clock `deadline`; raise JobFailed / JobCancelled / JobTimeout."""
    cursor = cursor or EventCursor()
    delay = initial
    while True:
        job = provider.get_job(job_id)
        if job is None:
            raise JobFailed(f"fine-tuning job {job_id} is gone at the provider", job_id=job_id, code=None)
        events = cursor.new_events(provider, job_id)
        for event in events:
            on_event(event)
        if events and cursor.last_id:
            on_cursor(cursor.last_id)
        if on_progress and (progress := progress_of(events)):
            on_progress(*progress)
        if job.state == "succeeded":
            return job
        if job.state == "failed":
            raise job_failed(job, [e.message for e in itertools.islice(provider.list_events(job_id), LAST_EVENTS)])
        if job.state == "cancelled":
            raise JobCancelled(f"fine-tuning job {job_id} was cancelled")
        if should_cancel():
            provider.cancel_job(job_id)
            raise JobCancelled(f"the flow run was cancelled; cancelled fine-tuning job {job_id}")
        if time.time() > deadline:
            raise JobTimeout(f"fine-tuning job {job_id} is still {job.provider_status} at its polling deadline")
        time.sleep(min(delay, max(0.0, deadline - time.time())))
        delay = min(maximum, delay * 1.5)


LAST_EVENTS = 5  # of a job that failed without a reason, shown instead of one
_LINE = re.compile(r"\b(?:line|example)\s+(\d+)", re.IGNORECASE)


def provider_error(job: RemoteJob, last_events: list[str]) -> dict[str, Any]:
    """The failed job's error as the provider gave it: code, message, param, and the line its message names.

    Empty fields are None. A job failed with no message also keeps its last events (newest first).
    """
    message = job.error_message or None
    line = _LINE.search(message or "")
    return {"code": job.error_code or None, "message": message, "param": job.error_param or None,
            "line": int(line.group(1)) if line else None, **({} if message else {"last_events": last_events})}


def job_failed(job: RemoteJob, last_events: list[str]) -> JobFailed:
    """JobFailed whose message quotes the provider's error verbatim, or says it gave none."""
    error = provider_error(job, last_events)
    given = ", ".join(f"{field} {error[field]!r}" for field in ("code", "param", "line") if error[field] is not None)
    if error["message"]:
        text = f"fine-tuning job {job.id} failed; the provider says ({given or 'no code'}): {error['message']}"
    else:
        events = " | ".join(last_events) or "none"
        text = (f"fine-tuning job {job.id} failed and the provider gave no reason ({given or 'no code, no message'});"
                f" its last events, newest first: {events}")
    return JobFailed(text, job_id=job.id, code=error["code"], provider_error=error)


# The result file's own column names are inconsistent (`train_accuracy` next to
# `valid_mean_token_accuracy`); both are mean token accuracies, and ftflow names them alike.
METRIC_COLUMNS = {"train_accuracy": "train_token_accuracy", "valid_mean_token_accuracy": "valid_token_accuracy"}


def parse_step_metrics(text: str) -> list[dict[str, float | None]]:
    """Rows of a job's step_metrics.csv with ftflow's column names; empty cells become None."""
    return [{METRIC_COLUMNS.get(k, k): float(v) if v not in ("", None) else None for k, v in row.items()}
            for row in csv.DictReader(io.StringIO(text))]


def sample_curve(curve: list[dict[str, Any]], max_rows: int = 200) -> list[dict[str, Any]]:
    """At most about `max_rows` evenly spaced rows, always ending with the last step, each step once."""
    if not curve:
        return []
    every = -(-len(curve) // max_rows)
    rows = curve[::every]
    return rows if rows[-1] is curve[-1] else [*rows, curve[-1]]


def training_metrics(provider: Provider, job: RemoteJob) -> dict[str, Any]:
    """Final figures and the loss curve from the job's result file (step_metrics.csv)."""
    if not job.result_files:
        return {"steps": 0, "curve": []}
    rows = parse_step_metrics(provider.file_text(job.result_files[0]))
    last = rows[-1] if rows else {}
    return {
        "steps": len(rows),
        "final_train_loss": last.get("train_loss"),
        "final_train_token_accuracy": last.get("train_token_accuracy"),
        "final_valid_loss": last.get("valid_loss"),
        "final_valid_token_accuracy": last.get("valid_token_accuracy"),
        "curve": rows,
    }


# --- tasks -----------------------------------------------------------------------------------


@task(name="plan-job", cache_policy=RUN_CACHE)
def plan_job(dataset_dir: str, settings: Settings, train: Any, validation: Any | None) -> JobSpec:
    """Return the job spec (generation 0) for a prepared dataset folder (its report gives the dataset sha256)."""
    from pathlib import Path

    if train is None:
        raise DataError(f"{dataset_dir}/train.jsonl is empty: nothing to fine-tune on")
    report = json.loads((Path(dataset_dir) / "report.json").read_text("utf-8"))
    prepared_for = report.get("method", "supervised")
    if prepared_for != settings.method:
        raise DataError(f"{dataset_dir} was prepared for method {prepared_for!r}, not {settings.method!r}")
    n_epochs = settings.n_epochs if settings.n_epochs is not None else report["n_epochs"]
    hyperparameters: dict[str, Any] = {"n_epochs": n_epochs}
    if settings.method == "dpo":
        hyperparameters["beta"] = settings.dpo_beta
    return JobSpec(
        model=settings.model, training_file=train.file_id,
        validation_file=validation.file_id if validation else None, dataset_sha256=report["dataset_sha256"],
        suffix=settings.suffix, method=settings.method, hyperparameters=hyperparameters, seed=settings.seed,
    )


# No Prefect retries: ftflow/exactly_once.py is the one retry layer of creates.
@task(name="create-job", cache_policy=RUN_CACHE)
def create_job(spec: JobSpec, settings: Settings, resources: RunResources, *, force: bool) -> dict[str, Any]:
    """Return the job (created now or attached to) for this spec's idempotency key; `force`: as in create_job_once."""
    from prefect.runtime import flow_run

    job, created, resolved = create_job_once(resources.provider, resources.ledger, spec, force=force,
                                             policy=OncePolicy.from_settings(settings), flow_run_id=flow_run.get_id(),
                                             quota=QuotaWait.from_settings(settings))
    return {"job_id": job.id, "created": created, "idempotency_key": resolved.key, "generation": resolved.generation,
            "status": job.state}


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
def wait_for_job(job_id: str, idempotency_key: str, settings: Settings, resources: RunResources) -> dict[str, Any]:
    """Return the finished job and its training metrics; stream its events into the run log.

    The polling deadline and the last event logged live in the ledger, so a retry (or a
    re-run attaching to this job) neither extends the deadline nor logs an event twice.
    """
    from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
    from prefect.logging import get_run_logger

    logger = get_run_logger()
    provider, ledger = resources.provider, resources.ledger
    entry = ledger.job_entry(provider.identity, idempotency_key) or {}
    deadline = entry.get("wait_deadline") or time.time() + settings.poll_timeout_seconds
    ledger.record_job(provider.identity, idempotency_key, status=entry.get("status") or "pending",
                        job_id=job_id, wait_deadline=deadline)
    events = JobEventLog()

    def log_event(event: JobEvent) -> None:
        if line := events.line(event):
            logger.info("job %s: %s", job_id, line)

    progress_id = create_progress_artifact(0.0, key="ftflow-fine-tuning-progress",
                                           description=f"Steps of fine-tuning job {job_id}")
    with provider.explained():
        job = poll_job(
            provider, job_id, initial=settings.poll_initial_seconds, maximum=settings.poll_max_seconds,
            deadline=deadline, cursor=EventCursor(entry.get("last_event_id")),
            on_event=log_event,
            on_progress=lambda step, total: update_progress_artifact(progress_id, 100.0 * step / total),
            on_cursor=lambda last_id: ledger.record_job(provider.identity, idempotency_key, status="running",
                                                        last_event_id=last_id),
            should_cancel=_flow_run_cancelling if settings.cancel_job_on_flow_cancel else (lambda: False),
        )
        ledger.record_job(provider.identity, idempotency_key, status=job.state)
        update_progress_artifact(progress_id, 100.0)
        metrics = training_metrics(provider, job)
    metrics["curve"] = sample_curve(metrics["curve"])
    create_table_artifact(metrics["curve"], key="ftflow-loss-curve",
                          description=f"Training metrics of {job.fine_tuned_model}")
    return {"job_id": job.id, "status": job.state, "fine_tuned_model": job.fine_tuned_model,
            "trained_tokens": job.trained_tokens, "hyperparameters": job.hyperparameters,
            "result_files": job.result_files, "metrics": metrics, "duration_seconds": job.duration_seconds}


def cancel_flow_run_jobs(flow: Any, flow_run: Any, state: Any) -> None:
    """on_cancellation hook: cancel the provider jobs this flow run created or attached to.

    Covers a worker that stops the process on cancellation, where the polling loop cannot
    react. Jobs already finished are left alone.
    """
    from ftflow.settings import settings_of_parameters

    settings = settings_of_parameters(flow_run.parameters or {})
    if not settings.cancel_job_on_flow_cancel:
        return
    resources = RunResources(settings)
    provider = resources.provider
    for entry in resources.ledger.jobs_of_flow_run(str(flow_run.id)):
        job = provider.get_job(entry["job_id"]) if entry["job_id"] else None
        if job is not None and job.state in RUNNING:
            provider.cancel_job(job.id)
            log.info("cancelled fine-tuning job %s with flow run %s", job.id, flow_run.id)


# --- the dataset folder's own verdict (issue: finetune must not train on a gate-failed folder) ----


def verify_dataset(dataset_dir: str, *, n_epochs: int | None, max_cost_usd: float | None) -> dict[str, Any]:
    """Return the folder's report if it may be trained on; raise DataError (exit 3) if not.

    Refuses a folder whose report says a gate failed, whose files are not the ones the report
    fingerprinted, or whose cost with an `--n-epochs` override is over the budget.
    """
    from pathlib import Path

    from ftflow.errors import BudgetExceeded
    from tasks.report import dataset_sha256

    folder = Path(dataset_dir)
    report_path = folder / "report.json"
    if not report_path.exists():
        raise DataError(f"{dataset_dir} has no report.json: prepare it with `ftflow prepare` first")
    report = json.loads(report_path.read_text("utf-8"))
    gate = report.get("gate") or {}
    if not gate.get("passed", False):
        failures = "; ".join(gate.get("failures") or ["no gate verdict in the report"])
        raise DataError(f"{report_path} says the gate failed ({failures}); refusing to fine-tune on it")
    train, validation = folder / "train.jsonl", folder / "validation.jsonl"
    if not train.exists() or not validation.exists() or dataset_sha256(train, validation) != report["dataset_sha256"]:
        raise DataError(f"the files in {dataset_dir} do not match the sha256 in its report.json "
                        f"({report['dataset_sha256'][:12]}); prepare the folder again")
    if n_epochs is not None and n_epochs != report["n_epochs"]:
        cost = report["estimated_cost_usd"] * n_epochs / report["n_epochs"]
        limit = max_cost_usd if max_cost_usd is not None else report.get("max_cost_usd")
        if limit is not None and cost > limit:
            raise BudgetExceeded(estimated_usd=cost, max_usd=limit)
    return report


@task(name="check-dataset", cache_policy=RUN_CACHE)
def check_dataset(dataset_dir: str, settings: Settings) -> dict[str, Any]:
    """Return the prepared folder's report after checking its gate, its files' sha256 and the budget."""
    return verify_dataset(dataset_dir, n_epochs=settings.n_epochs, max_cost_usd=settings.max_cost_usd)


@task(name="release-job", cache_policy=RUN_CACHE)
def release_job(job_id: str, resources: RunResources) -> None:
    """Mark the job used when finetune runs on its own; inside retrain, its run record does that."""
    from prefect.runtime import flow_run

    if not flow_run.get_parent_flow_run_id():
        resources.ledger.consume_job(job_id)


# --- serving ---------------------------------------------------------------------------------


def deployment_name(suffix: str | None, key: str) -> str:
    """The deployment name of a run's model: `<suffix>-<key tag>`, so a re-run re-uses it."""
    from ftflow.providers.base import key_tag

    return f"{(suffix or 'ftflow')[:40]}-{key_tag(key)}"


@task(name="deploy-model", cache_policy=RUN_CACHE, retries=2, retry_delay_seconds=[10, 60],
      retry_condition_fn=retry_on_transient)
def deploy_model(model: str, idempotency_key: str, settings: Settings, resources: RunResources) -> str:
    """Return the name the fine-tuned model answers under (Azure: a deployment, waited for; else the model id)."""
    provider = resources.provider
    with provider.explained():
        name = provider.deploy_model(model, deployment_name(settings.suffix, idempotency_key))
    if name != model:
        resources.ledger.record_deployment(provider.identity, model, name)
    return name
