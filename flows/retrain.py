"""retrain: the scheduled pipeline. prepare -> unchanged? -> (budget gate in prepare) -> finetune -> record.

Each run writes a folder `<runs_dir>/<run id>/` (the prepared dataset, report.json, run.json)
and one row in the registry, which the next run's unchanged-data check reads.
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
from tasks.lineage import check_unchanged, new_run_id, record_run, training_summary
from tasks.report import GateOptions
from tasks.transform import TransformOptions


@flow(name="retrain", flow_run_name="retrain-{model}", log_prints=True)
def retrain(
    sources: list[str] = ["data/raw/*"],  # noqa: B006 - Prefect copies parameters per run
    runs_dir: str = ".ftflow/runs",
    model: str = DEFAULT_MODEL,
    system_prompt: str | None = None,
    max_cost_usd: float | None = None,
    n_epochs: int | None = None,
    suffix: str | None = "ftflow",
    force: bool = False,
    backend: str | None = None,
) -> dict[str, Any]:
    """Return the run record: dataset, job, fine-tuned model, cost; or why nothing was trained."""
    settings = get_settings(model=model, system_prompt=system_prompt, max_cost_usd=max_cost_usd, n_epochs=n_epochs,
                            suffix=suffix, backend=backend)
    run_id = new_run_id()
    run_dir = str(Path(runs_dir) / run_id)
    base = {"run_id": run_id, "started_at": time.time(), "base_model": model, "run_dir": run_dir,
            "backend": settings.backend, "sources": sources}

    report = prepare(
        sources, out_dir=run_dir, model=model,
        transform=TransformOptions(system_prompt=settings.system_prompt, system_prompt_mode=settings.system_prompt_mode,
                                   pii=settings.pii),
        gates=GateOptions(validation_fraction=settings.validation_fraction, n_epochs=settings.n_epochs,
                          max_cost_usd=settings.max_cost_usd, min_train_examples=settings.min_train_examples,
                          max_rejected_share=settings.max_rejected_share),
    )
    dataset = {"dataset_sha256": report["dataset_sha256"], "prepare": report}
    skip = check_unchanged(report, settings, force)
    if skip:
        print(skip)
        return record_run({**base, **dataset, "status": "skipped", "reason": skip}, settings, run_dir)

    with tags(f"model:{model}", f"dataset:{report['dataset_sha256'][:12]}"):
        job = finetune(run_dir, model=model, suffix=settings.suffix, n_epochs=settings.n_epochs, force=force,
                       backend=settings.backend, return_state=True)
    if job.is_cancelled():
        record_run({**base, **dataset, "status": "cancelled", "reason": job.message}, settings, run_dir)
        return Cancelled(message=job.message)  # type: ignore[return-value]
    result = job.result()
    record = record_run({**base, **dataset, "status": "succeeded", **training_summary(result, report)}, settings,
                        run_dir)
    print(f"fine-tuned model: {record['fine_tuned_model']}  trained tokens: {record['trained_tokens']:,}  "
          f"estimated cost: ${record['estimated_cost_usd']:.4f}  report: {run_dir}/run.json")
    return record


if __name__ == "__main__":
    retrain()
