"""retrain: the scheduled pipeline.

prepare (with its quality and budget gates) -> skip if the data is unchanged -> finetune ->
evaluate on held-out data -> cost case -> promotion gate -> record the run's lineage.
Each run writes a folder `<runs_dir>/<run id>/` (the prepared dataset, report.json, eval.json,
run.json) and one row in the registry, which the next run's unchanged-data check reads.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, tags
from prefect.states import Cancelled

from flows.finetune import finetune
from flows.prepare import prepare
from ftflow.settings import DEFAULT_MODEL, get_settings
from tasks.economics import compute_cost_case
from tasks.evaluate import evaluate_models
from tasks.lineage import check_unchanged, new_run_id, record_run, training_summary
from tasks.preference_eval import evaluate_preferences
from tasks.preference_shard import PreferenceOptions
from tasks.promotion import current_model, decide_promotion
from tasks.report import GateOptions
from tasks.transform import TransformOptions


@flow(name="retrain", flow_run_name="retrain-{model}", log_prints=True)
def retrain(
    sources: list[str] = ["data/raw/*"],  # noqa: B006 - Prefect copies parameters per run
    runs_dir: str = ".ftflow/runs",
    model: str = DEFAULT_MODEL,
    system_prompt: str | None = None,
    baseline_system_prompt: str | None = None,
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
    settings = get_settings(model=model, system_prompt=system_prompt, baseline_system_prompt=baseline_system_prompt,
                            eval_json_schema=eval_json_schema, max_cost_usd=max_cost_usd, n_epochs=n_epochs,
                            suffix=suffix, monthly_requests=monthly_requests, backend=backend, method=method,
                            dpo_beta=dpo_beta)
    run_id = new_run_id()
    run_dir = str(Path(runs_dir) / run_id)
    base = {"run_id": run_id, "started_at": time.time(), "base_model": model, "run_dir": run_dir,
            "backend": settings.backend, "sources": sources, "method": settings.method}

    report = prepare(sources, out_dir=run_dir, model=model, transform=TransformOptions.from_settings(settings),
                     gates=GateOptions.from_settings(settings), method=settings.method,
                     min_rating_margin=settings.dpo_min_rating_margin,
                     preference=PreferenceOptions.from_settings(settings))
    dataset = {"dataset_sha256": report["dataset_sha256"], "prepare": report}
    skip = check_unchanged(report, settings, force)
    if skip:
        print(skip)
        return record_run({**base, **dataset, "status": "skipped", "reason": skip}, settings, run_dir)

    with tags(f"model:{model}", f"dataset:{report['dataset_sha256'][:12]}"):
        job = finetune(run_dir, model=model, suffix=settings.suffix, n_epochs=settings.n_epochs, force=force,
                       backend=settings.backend, method=settings.method, dpo_beta=settings.dpo_beta,
                       return_state=True)
    if job.is_cancelled():
        record_run({**base, **dataset, "status": "cancelled", "reason": job.message}, settings, run_dir)
        return Cancelled(message=job.message)  # type: ignore[return-value]
    trained = training_summary(job.result(), report, settings.tokens_mismatch_tolerance)

    current = current_model(settings)
    evaluate = evaluate_preferences if settings.method == "dpo" else evaluate_models
    evaluation = evaluate(run_dir, trained["fine_tuned_model"], current, settings)
    economics = compute_cost_case(evaluation, trained["trained_tokens"], model, settings.monthly_requests)
    decision = decide_promotion(evaluation, run_id, settings)
    record = record_run({**base, **dataset, "status": "succeeded", **trained, "evaluation": evaluation["models"],
                         "economics": economics.to_dict(), "promotion": decision.to_dict(),
                         "promoted": decision.promoted, "previous_model": current}, settings, run_dir)
    verdict = "promoted" if decision.promoted else "NOT promoted: " + "; ".join(decision.reasons)
    print(f"fine-tuned model: {record['fine_tuned_model']} ({verdict}); trained tokens: {record['trained_tokens']:,}; "
          f"estimated cost: ${record['estimated_cost_usd']:.4f}; report: {run_dir}/run.json")
    return record


if __name__ == "__main__":
    retrain()
