"""finetune: upload a prepared dataset folder, create its job exactly once, wait for it, deploy it.

reconcile (crashed runs, `creating` rows) -> check the folder (gate, sha256, budget) ->
upload train (+ validation) -> [a job slot of the backend account] create job (exactly once,
quota refusals waited out) -> poll (events, progress) -> metrics
-> deploy (Azure; a no-op elsewhere)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.states import Cancelled

from flows import named_after_model, run_settings
from ftflow.errors import JobCancelled
from ftflow.run_resources import RunResources
from ftflow.settings import Settings
from tasks.jobs import (
    cancel_flow_run_jobs,
    check_dataset,
    create_job,
    deploy_model,
    job_slot,
    plan_job,
    release_job,
    wait_for_job,
)
from tasks.reconcile import reconcile_ledger
from tasks.upload import upload_file


@flow(name="finetune", flow_run_name=named_after_model("finetune"), log_prints=True,
      on_cancellation=[cancel_flow_run_jobs])
def finetune(
    dataset_dir: str | None = None,
    overrides: dict[str, Any] | None = None,
    force: bool = False,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Return the finished job: fine-tuned model id, where it answers, trained tokens, training metrics.

    `dataset_dir` None: the out_dir setting (where `prepare` writes). Settings: `overrides` over
    FTFLOW_* over ftflow.toml over the defaults, resolved here once, or the parent's `settings`.
    """
    settings = run_settings("finetune", overrides, settings)
    resources = RunResources(settings)
    dataset_dir = dataset_dir or str(settings.out_dir)
    reconcile_ledger(resources)
    check_dataset(dataset_dir, settings)
    train = upload_file(str(Path(dataset_dir) / "train.jsonl"), settings, resources)
    validation = upload_file(str(Path(dataset_dir) / "validation.jsonl"), settings, resources)
    spec = plan_job(dataset_dir, settings, train, validation)
    with job_slot(settings, resources):  # the provider runs this many jobs at once: wait for a free one first
        job = create_job(spec, settings, resources, force=force)
        try:
            done = wait_for_job(job["job_id"], job["idempotency_key"], settings, resources)
        except JobCancelled as exc:
            return Cancelled(message=str(exc))  # type: ignore[return-value]
    deployment = deploy_model(done["fine_tuned_model"], job["idempotency_key"], settings, resources)
    release_job(done["job_id"], resources)
    return {**done, "method": settings.method, "idempotency_key": job["idempotency_key"], "created": job["created"],
            "backend": settings.backend, "deployment": deployment,
            "training_file": train.file_id, "validation_file": validation.file_id if validation else None}


if __name__ == "__main__":
    finetune()  # the folder `python flows/prepare.py` writes: the out_dir setting
