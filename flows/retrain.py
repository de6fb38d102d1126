"""retrain: the scheduled pipeline.

skip if the sources and settings are those of the last successful run -> prepare (with its
quality and budget gates) -> name the run after its dataset -> skip if the dataset is
unchanged -> finetune -> evaluate on held-out data -> cost case -> promotion gate ->
record the run's lineage -> plots and the run's summary. A run that fails is recorded too.
Each run writes a folder `<runs_dir>/<run id>/` (as far as it got: the prepared dataset,
report.json, eval.json, run.json, plots/) and one row in the registry, which the next run's
unchanged checks read.
A skipped run ends in a Completed state named `Skipped`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, tags
from prefect.states import Cancelled, Completed

from flows import untraced
from flows.finetune import finetune
from flows.prepare import prepare
from ftflow.outputs import refuse_sources_inside
from ftflow.settings import DEFAULT_MODEL, Settings, get_settings, read_prompt_file
from tasks.economics import compute_cost_case
from tasks.evaluate import evaluate_models
from tasks.lineage import (
    check_inputs_unchanged,
    check_unchanged,
    failure_recorded,
    new_run_id,
    record_run,
    run_cost_usd,
    training_summary,
)
from tasks.plots import draw_plots
from tasks.preference_eval import evaluate_preferences
from tasks.preference_shard import PreferenceOptions
from tasks.promotion import current_model, decide_promotion
from tasks.quality import DriftOptions, last_success_features
from tasks.reconcile import reconcile_ledger
from tasks.report import GateOptions
from tasks.summary import label_run, outcome, publish_summary, read_history
from tasks.transform import TransformOptions


@flow(name="retrain", flow_run_name="retrain-{model}", log_prints=True)
def retrain(
    sources: list[str] = ["data/raw/*"],  # noqa: B006 - Prefect copies parameters per run
    runs_dir: str = ".ftflow/runs",
    model: str = DEFAULT_MODEL,
    system_prompt: str | None = None,
    baseline_system_prompt: str | None = None,
    baseline_prompt_file: str | None = None,
    eval_json_schema: str | None = None,
    max_cost_usd: float | None = None,
    n_epochs: int | None = None,
    suffix: str | None = "ftflow",
    monthly_requests: int | None = None,
    force: bool = False,
    backend: str | None = None,
    method: str | None = None,
    dpo_beta: float | None = None,
) -> dict[str, Any]:
    """Return the run record: dataset, job, model, evaluation, cost case, promotion; or why it stopped."""
    settings = get_settings(model=model, system_prompt=system_prompt,
                            baseline_system_prompt=baseline_system_prompt or read_prompt_file(baseline_prompt_file),
                            eval_json_schema=eval_json_schema, max_cost_usd=max_cost_usd, n_epochs=n_epochs,
                            suffix=suffix, monthly_requests=monthly_requests, backend=backend, method=method,
                            dpo_beta=dpo_beta)
    # Before anything is written: a run never reads what it writes (ftflow/outputs.py).
    refuse_sources_inside(sources, {"--runs-dir": runs_dir, "work_dir": settings.work_dir,
                                    "service_data_dir": settings.service_data_dir})
    reconcile_ledger(settings)
    run_id = new_run_id()
    run_dir = str(Path(runs_dir) / run_id)
    base = {"run_id": run_id, "started_at": time.time(), "base_model": model, "run_dir": run_dir,
            "backend": settings.backend, "sources": sources, "method": settings.method}

    transform, gates = TransformOptions.from_settings(settings), GateOptions.from_settings(settings)
    preference = PreferenceOptions.from_settings(settings)
    with failure_recorded(base, settings, run_dir):
        unchanged = check_inputs_unchanged(sources, model, transform, gates, settings.method,
                                           settings.dpo_min_rating_margin, preference, settings, force)
        if unchanged:
            base["run_name"] = label_run(unchanged["dataset_sha256"])
            return skipped(base, {"dataset_sha256": unchanged["dataset_sha256"], "prepare": None},
                           unchanged["reason"], settings, run_dir)
        report = untraced(prepare(sources, out_dir=run_dir, model=model, transform=transform, gates=gates,
                                  drift=DriftOptions.from_settings(settings, previous=last_success_features(settings)),
                                  method=settings.method, min_rating_margin=settings.dpo_min_rating_margin,
                                  preference=preference))
        base["run_name"] = label_run(report["dataset_sha256"])
        dataset = {"dataset_sha256": report["dataset_sha256"], "prepare": report}
        skip = check_unchanged(report, settings, force)
        if skip:
            return skipped(base, dataset, skip, settings, run_dir)

        with tags(f"model:{model}", f"dataset:{report['dataset_sha256'][:12]}"):
            job = finetune(run_dir, model=model, suffix=settings.suffix, n_epochs=settings.n_epochs, force=force,
                           backend=settings.backend, method=settings.method, dpo_beta=settings.dpo_beta,
                           return_state=True)
        if job.is_cancelled():
            record_run({**base, **dataset, "status": "cancelled", "reason": job.message}, settings, run_dir)
            return Cancelled(message=job.message)  # type: ignore[return-value]
        trained = training_summary(untraced(job.result()), report, settings.tokens_mismatch_tolerance)

        current = current_model(settings)
        evaluate = evaluate_preferences if settings.method == "dpo" else evaluate_models
        evaluation = evaluate(run_dir, trained["fine_tuned_model"], current, settings)
        economics = compute_cost_case(evaluation, trained["trained_tokens"], model, settings.monthly_requests)
        decision = decide_promotion(evaluation, run_id, settings)
        record = record_run({**base, **dataset, "status": "succeeded", **trained,
                             "evaluation": evaluation["models"], "eval_examples": evaluation["examples"],
                             "eval_examples_sha256": evaluation["examples_sha256"],
                             "economics": economics and economics.to_dict(), "promotion": decision.to_dict(),
                             "run_cost_usd": run_cost_usd(trained, economics and economics.training_cost_usd),
                             "promoted": decision.promoted, "previous_model": current}, settings, run_dir)
        plots = draw_plots(record, read_history(settings), run_dir)
        publish_summary(record, settings, plots, str(job.state_details.flow_run_id))
        print(f"{record['run_name']}: {outcome(record)}")
        return record


def skipped(base: dict[str, Any], dataset: dict[str, Any], reason: str, settings: Settings, run_dir: str) -> Any:
    """Record the run as skipped, with its summary; a Completed state named `Skipped`."""
    print(reason)
    record = record_run({**base, **dataset, "status": "skipped", "reason": reason, "run_cost_usd": 0.0},
                        settings, run_dir)
    publish_summary(record, settings, draw_plots(record, read_history(settings), run_dir))
    return Completed(name="Skipped", message=reason, data=record)


if __name__ == "__main__":
    retrain()
