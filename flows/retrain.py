"""retrain: the scheduled pipeline.

skip if the sources and settings are those of the last successful run -> prepare (with its
quality and budget gates) -> name the run after its dataset -> skip if the dataset is
unchanged -> finetune -> evaluate on held-out data -> cost case (with hosting) -> promotion
gate -> remove deployments neither promoted nor the previous promoted -> record the run's
lineage -> plots and the run's summary. A run that fails is recorded too.
Each run writes a folder `<runs_dir>/<run id>/` (as far as it got: the prepared dataset,
report.json, eval.json, run.json, plots/) and one row in the lineage store, which the next
run's unchanged checks read.
A skipped run ends in a Completed state named `Skipped`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect import flow, tags
from prefect.states import Cancelled, Completed

from flows import run_model, run_settings, untraced
from flows.finetune import finetune
from flows.prepare import prepare
from ftflow.errors import JobFailed
from ftflow.outputs import refuse_sources_inside
from ftflow.run_resources import RunResources
from ftflow.settings import Settings
from tasks.economics import compute_cost_case
from tasks.evaluate import evaluate_models
from tasks.hosting import remove_stale_deployments
from tasks.lineage import (
    check_inputs_unchanged,
    check_unchanged,
    failure_reason,
    last_success_features,
    new_run_id,
    record_run,
    run_cost_usd,
    training_summary,
)
from tasks.plots import draw_plots
from tasks.preference_eval import evaluate_preferences
from tasks.promotion import current_model, decide_promotion
from tasks.reconcile import reconcile_ledger
from tasks.summary import label_run, outcome, publish_summary, read_history, run_name


@flow(name="retrain", flow_run_name=lambda: run_name(run_model(), new_run_id()), log_prints=True)
def retrain(
    sources: list[str] = ["data/raw/*"],  # noqa: B006 - Prefect copies parameters per run
    overrides: dict[str, Any] | None = None,
    force: bool = False,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Return the run record: dataset, job, model, evaluation, cost case, promotion; or why it stopped.

    Settings: `overrides` (what a person set: a deployment parameter, a typed option) over
    FTFLOW_* over ftflow.toml over the defaults, resolved once here (or by the command, which
    hands its `settings`); prepare and finetune run on the same resolved settings.
    """
    settings = run_settings("retrain", overrides, settings)
    resources = RunResources(settings)
    # Before anything is written: a run never reads what it writes (ftflow/outputs.py).
    refuse_sources_inside(sources, {"runs_dir": settings.runs_dir, "work_dir": settings.work_dir,
                                    "service_data_dir": settings.service_data_dir})
    reconcile_ledger(resources)
    run_id = new_run_id()
    run_dir = str(settings.runs_dir / run_id)
    base = {"run_id": run_id, "started_at": time.time(), "base_model": settings.model, "run_dir": run_dir,
            "backend": settings.backend, "sources": sources, "method": settings.method,
            "settings": settings.effective()}

    with failure_recorded(base, resources, run_dir):
        unchanged = check_inputs_unchanged(sources, settings, force, resources)
        if unchanged:
            base["run_name"] = label_run(unchanged["dataset_sha256"], settings)
            return skipped(base, {"dataset_sha256": unchanged["dataset_sha256"], "prepare": None},
                           unchanged["reason"], resources, run_dir)
        previous_features = last_success_features(settings, resources)
        report = untraced(prepare(sources, out_dir=run_dir, previous_features=previous_features, settings=settings))
        base["run_name"] = label_run(report["dataset_sha256"], settings)
        dataset = {"dataset_sha256": report["dataset_sha256"], "prepare": report}
        skip = check_unchanged(report, resources, force)
        if skip:
            return skipped(base, dataset, skip, resources, run_dir)

        with tags(f"model:{settings.model}", f"dataset:{report['dataset_sha256'][:12]}"):
            job = finetune(run_dir, force=force, settings=settings, return_state=True)
        if job.is_cancelled():
            record_run({**base, **dataset, "status": "cancelled", "reason": job.message}, resources, run_dir)
            return Cancelled(message=job.message)  # type: ignore[return-value]
        trained = training_summary(untraced(job.result()), report, settings.tokens_mismatch_tolerance)

        current = current_model(settings, resources)
        evaluate = evaluate_preferences if settings.method == "dpo" else evaluate_models
        evaluation = evaluate(run_dir, trained["fine_tuned_model"], current, settings, resources)
        economics = compute_cost_case(evaluation, trained["trained_tokens"], settings.model, settings.monthly_requests,
                                      settings.backend)
        decision = decide_promotion(evaluation, run_id, settings, resources)
        removed = remove_stale_deployments(trained["fine_tuned_model"], settings, resources)
        record = record_run({**base, **dataset, "status": "succeeded", **trained,
                             "evaluation": evaluation["models"], "eval_examples": evaluation["examples"],
                             "eval_examples_sha256": evaluation["examples_sha256"],
                             "economics": economics and economics.to_dict(), "promotion": decision.to_dict(),
                             "run_cost_usd": run_cost_usd(trained, economics and economics.training_cost_usd),
                             "promoted": decision.promoted, "previous_model": current,
                             "deployments_removed": removed}, resources, run_dir)
        plots = draw_plots(record, read_history(resources), run_dir)
        publish_summary(record, resources, plots, str(job.state_details.flow_run_id))
        print(f"{record['run_name']}: {outcome(record)}")
        return record


def skipped(base: dict[str, Any], dataset: dict[str, Any], reason: str, resources: RunResources,
            run_dir: str) -> Any:
    """Record the run as skipped, with its summary; a Completed state named `Skipped`."""
    print(reason)
    record = record_run({**base, **dataset, "status": "skipped", "reason": reason, "run_cost_usd": 0.0},
                        resources, run_dir)
    publish_summary(record, resources, draw_plots(record, read_history(resources), run_dir))
    return Completed(name="Skipped", message=reason, data=record)


@contextmanager
def failure_recorded(base: dict[str, Any], resources: RunResources, run_dir: str) -> Iterator[None]:
    """Record a run that raises as `failed`, with the reason, then let the error go on.

    `ftflow runs` then shows every run, not only those that got to the end. The record names no
    job: a job that finished before the failure stays free for the next run to re-attach to.
    A failed job also keeps the provider's error verbatim (`provider_error`) and gets its summary.
    """
    try:
        yield
    except Exception as exc:
        failed_job = isinstance(exc, JobFailed) and exc.provider_error is not None
        given = {"job_id": exc.job_id, "provider_error": exc.provider_error} if failed_job else {}  # type: ignore[attr-defined]
        record = record_run({**base, "status": "failed", "reason": failure_reason(exc), **given}, resources, run_dir)
        if failed_job:
            publish_summary(record, resources, {})
        raise


if __name__ == "__main__":
    retrain()
