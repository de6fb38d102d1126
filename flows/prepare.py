"""prepare: raw conversations -> validated, budgeted fine-tuning data. Nothing is uploaded.

plan shards -> prepare each shard (in parallel, one task run per shard) -> de-duplicate and
split -> moderation pre-check (report or quarantine; tasks/moderation.py) -> the backend's own
per-record rules (quarantine; tasks/provider_rules.py) -> GX suites -> budget -> report ->
gates -> publish. train/validation appear in out_dir only after the gates pass.

What happens to each record is the run's record pass (tasks/passes/): chat examples (method
"supervised": extract, normalise, checks, tokens, digests) or DPO preference pairs (method
"dpo": one shard per file, pairs split by conversation, plus the `preference` suite). The
steps around it are the same for both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, unmapped

from flows import named_after_model, run_settings
from ftflow.run_resources import RunResources
from ftflow.settings import Settings
from tasks.budget import estimate_budget
from tasks.features import DriftOptions
from tasks.lineage import fingerprint_inputs
from tasks.moderation import ModerationOptions, moderate_examples
from tasks.passes import record_pass_for
from tasks.provider_rules import check_provider_rules, rules_backend
from tasks.quality import check_quality, method_figures
from tasks.readers import ExtractOptions
from tasks.reduce import reduce_shards
from tasks.report import (
    GateOptions,
    clear_previous_outputs,
    compute_totals,
    count_too_long,
    enforce_gates,
    publish_dataset,
    suite_parameters,
    write_report,
)
from tasks.shards.plan import plan_input
from tasks.shards.runner import DEFAULT_RUNNER, shard_runner
from tasks.shards.store import prepare_shard_task


@flow(name="prepare", flow_run_name=named_after_model("prepare"), log_prints=True, task_runner=DEFAULT_RUNNER)
def prepare(
    sources: list[str],
    overrides: dict[str, Any] | None = None,
    out_dir: str | None = None,
    sql_url: str | None = None,
    query: str | None = None,
    previous_features: dict[str, Any] | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Return the report of a prepared dataset in out_dir (train/validation/rejected JSONL).

    Settings: `overrides` (what a person set) over FTFLOW_* over ftflow.toml over the defaults,
    resolved here once; a parent flow (retrain) or the command hands its resolved `settings`
    instead. `out_dir` None: the out_dir setting. `previous_features`: the last successful run's
    feature summary, for the drift checks (retrain).
    """
    settings = run_settings("prepare", overrides, settings)
    resources = RunResources(settings)
    out_dir = out_dir or str(settings.out_dir)
    work_dir = str(settings.work_dir)
    record_pass = record_pass_for(settings, ExtractOptions.from_settings(settings, sql_url, query))
    gates, moderation = GateOptions.from_settings(settings), ModerationOptions.from_settings(settings)
    with shard_runner(settings):  # workers, dask_address: where the shards run
        staged = clear_previous_outputs(out_dir, sources, work_dir)
        plan = plan_input(sources, record_pass, settings.shard_bytes, work_dir)
        # Before any later step: Prefect links inputs to earlier results by identity, and a budget
        # that holds the encoding would otherwise show as an input of this digest.
        inputs = fingerprint_inputs(plan, record_pass, gates, moderation, rules_backend(settings.backend))
        shards = prepare_shard_task.map(plan.shards, unmapped(record_pass), unmapped(work_dir))
        results = shards.result()  # the first shard that failed fails the run, named
        # The tasks that read the shards get their futures: Prefect then draws each shard's edge to
        # them, which it cannot trace from results returned by a worker process.
        split = reduce_shards(shards, staged, out_dir, record_pass)
        moderated = moderate_examples(shards, split, staged, moderation, resources)  # report or quarantine the flagged
        ruled = check_provider_rules(moderated.split, staged, settings.backend)  # quarantine what the backend refuses
        split = ruled.split
        totals = compute_totals(shards, split)
        figures = method_figures(split.features_path, record_pass)
        quality = check_quality(split.features_path, totals, suite_parameters(gates, record_pass.training_context),
                                Path(out_dir), DriftOptions.from_settings(settings, previous=previous_features),
                                figures)
        budget = estimate_budget(split.features_path, record_pass, settings.model, count_too_long(results),
                                 gates.n_epochs, gates.max_cost_usd,
                                 {"train": split.train_path, "validation": split.validation_path})
        report = write_report(shards, plan.fingerprints, plan.skipped_sources, split, quality, budget, out_dir,
                              record_pass.method, inputs, figures, moderated, ruled)
        gates_passed = enforce_gates(report, staged, return_state=True)
        gates_passed.result()  # raises the gate's error: QualityGateFailed or BudgetExceeded
        # No data passes from the gates to publishing: wait_for draws the edge in the graph.
        publish_dataset(staged, out_dir, wait_for=[gates_passed])
    return report


if __name__ == "__main__":
    prepare(["data/raw/*"])
