"""Fine-tuning jobs: create, list, retrieve, cancel, pause, resume, events, checkpoints.

Lifecycle `validating_files -> queued -> running -> succeeded | failed | cancelled`, driven
by `advance()` (called by the service's scheduler thread) on a simulated clock: a job runs
for `seconds_per_1k_tokens` x trained tokens / 1000. All state is in SQLite, so a job
survives a restart of the service and goes on where it was.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import random
import re
import time
from typing import Any

from localai.common import new_id, now, paginate
from localai.engine.files import FilesBackend
from localai.engine.models import DPO_MODELS, ORG, ModelsBackend, base_models, base_of
from localai.engine.training_data import MIN_EXAMPLES, check_file, training_tokens
from localai.engine.validation import check_create_job
from localai.exceptions import DailyJobLimit, InvalidRequest, NotFound, PermissionDenied
from localai.faults import FaultInjector
from localai.store import Store, public

log = logging.getLogger("localai.jobs")
ACTIVE = ("validating_files", "queued", "running")
TERMINAL = ("succeeded", "failed", "cancelled")
SUFFIX = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PHASE_SECONDS = {"validating_files": 0.2, "queued": 0.2}
MAX_TICK_SECONDS = 1.0  # downtime of the service does not count as training time


def default_epochs(n: int) -> int:
    """OpenAI's rule: 3 epochs, clamped so that examples x epochs stays within 100..25,000.

    This is the provider's side, kept apart from the pipeline's estimate (tasks/budget.py) on
    purpose: the service imports nothing of the pipeline, so the end-to-end test that trained
    tokens equal the estimated billing tokens checks the two against each other.
    """
    if n * 3 < 100:
        return min(25, 100 // n)
    if n * 3 > 25_000:
        return max(1, 25_000 // n)
    return 3


def simulated_loss(progress: float, seed: int, step: int) -> tuple[float, float]:
    """A plausible, deterministic loss curve: falls fast, then flattens, with small noise."""
    noise = random.Random(seed * 100_003 + step).uniform(-0.04, 0.04)
    loss = max(0.05, 0.25 + 1.6 * math.exp(-4.0 * progress) + noise)
    return round(loss, 4), round(min(0.99, 1.0 - loss / 2.2), 4)


class JobsBackend:
    def __init__(
        self,
        store: Store,
        files: FilesBackend,
        models: ModelsBackend,
        *,
        seconds_per_1k_tokens: float,
        refusal: str | None = None,
        daily_job_limit: int | None = None,
        faults: FaultInjector | None = None,
        max_running_jobs: int | None = None,
    ) -> None:
        self.store = store
        self.faults = faults
        self.max_running_jobs = max_running_jobs
        self.files = files
        self.models = models
        self.seconds_per_1k_tokens = seconds_per_1k_tokens
        self.refusal = refusal
        self.daily_job_limit = daily_job_limit
        self._broken: set[str] = set()

    # --- API operations --------------------------------------------------------------------

    def _check_file(self, file_id: str | None, param: str) -> None:
        if file_id is None:
            return
        record = self.store.get("file", file_id)
        if record is None:
            raise InvalidRequest(f"File {file_id} not found", param=param, code="invalid_file")
        if record["purpose"] != "fine-tune":
            raise InvalidRequest(
                f"File {file_id} has purpose '{record['purpose']}', expected 'fine-tune'",
                param=param,
                code="invalid_file_purpose",
            )
        if record["status"] == "error":
            raise InvalidRequest(
                f"File {file_id} failed processing: {record['status_details']}", param=param, code="invalid_file"
            )

    def _check_allowed(self, model: str) -> None:
        if self.refusal:
            raise PermissionDenied(self.refusal, code="fine_tuning_not_allowed")
        if self.daily_job_limit is not None:  # per model and rolling 24 hours, as OpenAI words it
            day_ago = now() - 86_400
            today = [j for j in self.store.list("job") if j["created_at"] > day_ago and j["model"] == model]
            if len(today) >= self.daily_job_limit:
                raise DailyJobLimit(self.daily_job_limit, model)

    def create_job(self, body: Any) -> dict[str, Any]:
        """Create a job from a create-job request body (checked here, whichever router received it)."""
        request = check_create_job(body)
        model = request["model"]
        self._check_allowed(model)
        if model not in base_models() and self.store.get("model", model) is None:
            raise InvalidRequest(
                f"Model {model} is not available for fine-tuning or does not exist.",
                param="model",
                code="model_not_available",
            )
        method = request["method"]
        if method["type"] == "dpo" and base_of(model) not in DPO_MODELS:
            raise InvalidRequest(
                f"Model {model} is not available for fine-tuning with method 'dpo'. "
                f"Models that support it: {', '.join(sorted(DPO_MODELS))}.",
                param="model",
                code="model_not_available",
            )
        self._check_file(request["training_file"], "training_file")
        self._check_file(request.get("validation_file"), "validation_file")
        suffix = request.get("suffix")
        if suffix is not None and not SUFFIX.match(suffix):
            raise InvalidRequest("suffix must be 1-64 characters of letters, digits, - and _", param="suffix")
        metadata = request["metadata"]
        given = method[method["type"]]["hyperparameters"]
        hyper = {k: given.get(k, "auto") for k in ("batch_size", "learning_rate_multiplier", "n_epochs")} | (
            {"beta": given.get("beta", "auto")} if method["type"] == "dpo" else {}
        )
        created = now()
        job = {
            "id": new_id("ftjob-"),
            "object": "fine_tuning.job",
            "created_at": created,
            "error": None,
            "fine_tuned_model": None,
            "finished_at": None,
            "hyperparameters": hyper,
            "model": model,
            "organization_id": f"org-{ORG}",
            "result_files": [],
            "status": "validating_files",
            "trained_tokens": None,
            "training_file": request["training_file"],
            "validation_file": request.get("validation_file"),
            "integrations": [],
            "seed": request.get("seed") if request.get("seed") is not None else random.randrange(2**31),
            "estimated_finish": None,
            "method": {"type": method["type"], method["type"]: {"hyperparameters": hyper}},
            "metadata": metadata,
            "_suffix": suffix,
            "_sim": {"phase_since": time.time(), "elapsed": 0.0},
        }
        if self.faults and self.faults.plan.job_error:  # decided at create: the plan then may change
            job["_sim"]["fail_with"] = self.faults.plan.job_error.model_dump()
        self.store.put("job", job)
        self._event(job, f"Validating training file: {job['training_file']}")
        return public(job)

    def get(self, job_id: str) -> dict[str, Any]:
        job = self.store.get("job", job_id)
        if job is None:
            raise NotFound.missing("fine-tuning job", job_id, param="fine_tuning_job_id")
        return job

    def retrieve_job(self, job_id: str) -> dict[str, Any]:
        return public(self.get(job_id))

    def list_jobs(self, *, after: str | None, limit: int, metadata: dict[str, str] | None) -> dict[str, Any]:
        jobs = self.store.list("job", newest_first=True)
        if metadata:
            jobs = [j for j in jobs if all((j.get("metadata") or {}).get(k) == v for k, v in metadata.items())]
        page, has_more = paginate([public(j) for j in jobs], after=after, limit=limit)
        return {"object": "list", "data": page, "has_more": has_more}

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        with self.store.transaction():
            job = self.get(job_id)
            if job["status"] in TERMINAL:
                raise InvalidRequest(
                    f"Job {job_id} has already {job['status']}; it cannot be cancelled.", param="fine_tuning_job_id"
                )
            job.update(status="cancelled", finished_at=now(), estimated_finish=None)
            self.store.put("job", job)
        self._event(job, "Fine-tuning job cancelled")
        return public(job)

    def pause_job(self, job_id: str) -> dict[str, Any]:
        return self._switch(job_id, "running", "paused", "Fine-tuning job paused")

    def resume_job(self, job_id: str) -> dict[str, Any]:
        return self._switch(job_id, "paused", "running", "Fine-tuning job resumed")

    def _switch(self, job_id: str, expected: str, target: str, message: str) -> dict[str, Any]:
        with self.store.transaction():
            job = self.get(job_id)
            if job["status"] != expected:
                raise InvalidRequest(
                    f"Job {job_id} is {job['status']}; only a {expected} job can be {target}.",
                    param="fine_tuning_job_id",
                )
            job["status"] = target
            job["_sim"]["last_tick"] = time.time()
            self.store.put("job", job)
        self._event(job, message)
        return public(job)

    def list_events(self, job_id: str, *, after: str | None, limit: int) -> dict[str, Any]:
        self.get(job_id)
        events = [public(e) for e in self.store.list("event", parent=job_id, newest_first=True)]
        page, has_more = paginate(events, after=after, limit=limit)
        return {"object": "list", "data": page, "has_more": has_more}

    def list_checkpoints(self, job_id: str, *, after: str | None, limit: int) -> dict[str, Any]:
        self.get(job_id)
        checkpoints = [public(c) for c in self.store.list("checkpoint", parent=job_id, newest_first=True)]
        page, has_more = paginate(checkpoints, after=after, limit=limit)
        return {
            "object": "list",
            "data": page,
            "has_more": has_more,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
        }

    # --- simulation --------------------------------------------------------------------------

    def _event(
        self, job: dict[str, Any], message: str, *, level: str = "info", data: dict[str, Any] | None = None
    ) -> None:
        event = {
            "object": "fine_tuning.job.event",
            "id": new_id("ftevent-"),
            "created_at": now(),
            "level": level,
            "message": message,
            "type": "metrics" if data else "message",
            "data": data or {},
        }
        self.store.put("event", event, parent=job["id"])

    def _fail(self, job: dict[str, Any], code: str, message: str, param: str | None) -> None:
        job.update(
            status="failed",
            finished_at=now(),
            error={"code": code, "message": message, "param": param},
            estimated_finish=None,
        )
        self.store.put("job", job)
        self._event(job, f"Fine-tuning job failed: {message}", level="error")

    def _validate(self, job: dict[str, Any]) -> None:
        """Check the data as OpenAI does after upload: format for the method, special tokens; plan the run."""
        sim = job["_sim"]
        if failure := sim.get("fail_with"):
            return self._fail(job, failure["code"], failure["message"], failure["param"])
        method = job["method"]["type"]
        for param in ("training_file", "validation_file"):
            if job[param] is None:
                continue
            path = self.files.content_path(job[param])
            minimum = MIN_EXAMPLES if param == "training_file" else 0
            _, reason = check_file(path, method=method, min_examples=minimum)
            if reason:
                kind = param.removesuffix("_file")
                return self._fail(job, f"invalid_{param}", f"The job failed due to an invalid {kind} file. {reason}",
                                  param)
        context = base_models()[base_of(job["model"])]
        totals, reason = training_tokens(self.files.content_path(job["training_file"]), job["model"], context)
        if reason:
            return self._fail(
                job, "invalid_training_file", f"The job failed due to an invalid training file. {reason}",
                "training_file",
            )
        hyper = job["hyperparameters"]
        n = len(totals)
        epochs = hyper["n_epochs"] if hyper["n_epochs"] != "auto" else default_epochs(n)
        batch = hyper["batch_size"] if hyper["batch_size"] != "auto" else max(1, min(256, n // 100))
        lr = hyper["learning_rate_multiplier"] if hyper["learning_rate_multiplier"] != "auto" else 1.8
        hyper.update(n_epochs=epochs, batch_size=batch, learning_rate_multiplier=lr)
        job["method"][job["method"]["type"]]["hyperparameters"] = hyper
        trained = sum(totals) * epochs
        sim.update(
            trained_tokens=trained,
            steps_per_epoch=math.ceil(n / batch),
            total_steps=math.ceil(n / batch) * epochs,
            duration=trained / 1000 * self.seconds_per_1k_tokens,
            steps_done=0,
        )
        job["status"] = "queued"
        sim["phase_since"] = time.time()
        self.store.put("job", job)
        self._event(job, "Files validated, moving job to queued state")

    def _start(self, job: dict[str, Any]) -> None:
        sim = job["_sim"]
        job["status"] = "running"
        sim["last_tick"] = time.time()
        job["estimated_finish"] = now() + math.ceil(sim["duration"])
        self.store.put("job", job)
        self._event(job, "Fine-tuning job started")

    def _run(self, job: dict[str, Any]) -> None:
        sim = job["_sim"]
        tick = time.time()
        sim["elapsed"] += min(MAX_TICK_SECONDS, max(0.0, tick - sim.get("last_tick", tick)))
        sim["last_tick"] = tick
        total = sim["total_steps"]
        progress = min(1.0, sim["elapsed"] / sim["duration"]) if sim["duration"] > 0 else 1.0
        target = math.floor(progress * total)
        every = max(1, total // 100)  # about 100 metric events per job, as OpenAI's UI shows
        for step in range(sim["steps_done"] + 1, target + 1):
            loss, accuracy = simulated_loss(step / total, job["seed"], step)
            if step % every == 0 or step == total:
                self._event(
                    job,
                    f"Step {step}/{total}: training loss={loss:.4f}",
                    data={
                        "step": step,
                        "train_loss": loss,
                        "train_mean_token_accuracy": accuracy,
                        "total_steps": total,
                    },
                )
            if step % sim["steps_per_epoch"] == 0:
                self._checkpoint(job, step, loss, accuracy)
        sim["steps_done"] = target
        if target >= total:
            self._succeed(job)
        else:
            self.store.put("job", job)

    def _model_id(self, job: dict[str, Any]) -> str:
        return f"ft:{base_of(job['model'])}:{ORG}:{job.get('_suffix') or ''}:{job['id'][-8:]}"

    def _checkpoint(self, job: dict[str, Any], step: int, loss: float, accuracy: float) -> None:
        checkpoint = {
            "id": new_id("ftckpt_"),
            "object": "fine_tuning.job.checkpoint",
            "created_at": now(),
            "fine_tuned_model_checkpoint": f"{self._model_id(job)}:ckpt-step-{step}",
            "step_number": step,
            "metrics": {
                "step": float(step),
                "train_loss": loss,
                "train_mean_token_accuracy": accuracy,
                "valid_loss": round(loss * 1.08, 4),
                "valid_mean_token_accuracy": round(accuracy * 0.97, 4),
                "full_valid_loss": round(loss * 1.1, 4),
                "full_valid_mean_token_accuracy": round(accuracy * 0.96, 4),
            },
            "fine_tuning_job_id": job["id"],
        }
        self.store.put("checkpoint", checkpoint, parent=job["id"])
        self._event(job, f"Checkpoint created at step {step}")

    def _succeed(self, job: dict[str, Any]) -> None:
        sim = job["_sim"]
        total = sim["total_steps"]
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"])
        for step in range(1, total + 1):
            loss, accuracy = simulated_loss(step / total, job["seed"], step)
            writer.writerow([step, loss, accuracy, round(loss * 1.08, 4), round(accuracy * 0.97, 4)])
        result = self.files.store_file(
            filename="step_metrics.csv", purpose="fine-tune-results", content=out.getvalue().encode()
        )
        model_id = self._model_id(job)
        finished = now()
        self.models.register(model_id, created=finished, training_file=job["training_file"], job_id=job["id"])
        job.update(
            status="succeeded",
            fine_tuned_model=model_id,
            finished_at=finished,
            result_files=[result["id"]],
            trained_tokens=sim["trained_tokens"],
            estimated_finish=None,
        )
        self.store.put("job", job)
        self._event(job, f"New fine-tuned model created: {model_id}")
        self._event(job, "The job has successfully completed")

    def advance(self) -> None:
        """Move every active job along its lifecycle; called by the scheduler thread.

        Each job advances on its own: an error in one fails that job (logged once, with its
        traceback) and the others go on.
        """
        for job in self.store.list("job"):
            if job["status"] not in ACTIVE:  # finished jobs never move again: no transaction for them
                continue
            if job["id"] in self._broken:
                continue
            try:
                self._advance(job["id"])
            except Exception as error:
                log.exception("fine-tuning job %s failed in the simulator", job["id"])
                self._fail_broken(job["id"], error)

    def _advance(self, job_id: str) -> None:
        with self.store.transaction():
            job = self.store.get("job", job_id)
            if job is None or job["status"] not in ACTIVE:
                return
            waited = time.time() - job["_sim"]["phase_since"]
            if job["status"] == "validating_files" and waited >= PHASE_SECONDS["validating_files"]:
                self._validate(job)
            elif job["status"] == "queued" and waited >= PHASE_SECONDS["queued"] and self._slot_free():
                self._start(job)
            elif job["status"] == "running":
                self._run(job)

    def _slot_free(self) -> bool:
        """Whether one more job may run: jobs over `max_running_jobs` wait in `queued`, oldest first."""
        if self.max_running_jobs is None:
            return True
        return sum(j["status"] in ("running", "paused") for j in self.store.list("job")) < self.max_running_jobs

    def _fail_broken(self, job_id: str, error: Exception) -> None:
        """Fail a job the simulator could not advance, as OpenAI reports its own internal errors."""
        self._broken.add(job_id)  # never retried, never logged again
        try:
            with self.store.transaction():
                job = self.store.get("job", job_id)
                if job is not None and job["status"] in ACTIVE:
                    message = f"The job failed due to an internal error ({type(error).__name__})."
                    self._fail(job, "server_error", message, None)
        except Exception:
            log.exception("fine-tuning job %s could not be marked failed", job_id)
