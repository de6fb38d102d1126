"""prepare: raw conversations -> validated, budgeted chat-format JSONL. Nothing is uploaded.

plan shards -> prepare each shard (extract, normalise, per-example checks, tokens, digests; in
parallel, one task run per shard) -> de-duplicate and split -> GX suites -> budget -> report
-> gates -> publish. train/validation appear in out_dir only after the gates pass.
With method "dpo" the same steps run on preference pairs (tasks/preference_shard.py): one
shard per file, pairs de-duplicated and split by conversation, plus the `preference` suite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, unmapped

from ftflow.settings import DEFAULT_MODEL
from tasks.budget import estimate_budget
from tasks.extract import ExtractOptions
from tasks.lineage import fingerprint_inputs
from tasks.preference_shard import (
    PreferenceOptions,
    PreferenceShardSettings,
    estimate_preference_budget,
    plan_preference_input,
    preference_figures,
    prepare_preference_shard_task,
    reduce_preference_shards,
)
from tasks.quality import DriftOptions, check_quality
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
from tasks.shards import DEFAULT_SHARD_MB, ShardProcessPool, ShardSettings, plan_input, prepare_shard_task
from tasks.transform import TransformOptions


@flow(name="prepare", flow_run_name="prepare-{model}", log_prints=True, task_runner=ShardProcessPool())
def prepare(
    sources: list[str],
    out_dir: str = ".ftflow/runs/latest",
    model: str = DEFAULT_MODEL,
    extract: ExtractOptions = ExtractOptions(),
    transform: TransformOptions = TransformOptions(),
    gates: GateOptions = GateOptions(),
    work_dir: str = ".ftflow/work",
    shard_bytes: int = DEFAULT_SHARD_MB << 20,
    drift: DriftOptions = DriftOptions(),
    method: str = "supervised",
    min_rating_margin: float = 1.0,
    preference: PreferenceOptions = PreferenceOptions(),
) -> dict[str, Any]:
    """Return the report of a prepared dataset in out_dir (train/validation/rejected JSONL)."""
    if method == "dpo":
        return prepare_preferences(sources, out_dir, model, transform, gates, work_dir, min_rating_margin,
                                   preference)
    settings = ShardSettings.for_model(model, extract, transform, gates.validation_fraction)
    staged = clear_previous_outputs(out_dir, sources, work_dir)
    plan = plan_input(sources, extract, shard_bytes, work_dir)
    # Before any later step: Prefect links inputs to earlier results by identity, and a budget
    # that holds settings.encoding would otherwise show as an input of this digest.
    inputs = fingerprint_inputs(plan, settings, gates)
    shards = prepare_shard_task.map(plan.shards, unmapped(settings), unmapped(work_dir))
    results = shards.result()  # the first shard that failed fails the run, named
    # The tasks that read the shards get their futures: Prefect then draws each shard's edge to
    # them, which it cannot trace from results returned by a worker process.
    split = reduce_shards(shards, staged, out_dir)
    totals = compute_totals(shards, split)
    quality = check_quality(split.features_path, totals, suite_parameters(gates, settings.training_context),
                            Path(out_dir), drift)
    budget = estimate_budget(split.features_path, model, settings.encoding, count_too_long(results), gates.n_epochs,
                             gates.max_cost_usd)
    report = write_report(shards, plan.fingerprints, plan.skipped_sources, split, quality, budget, out_dir,
                          {"method": "supervised", "inputs_sha256": inputs})
    gate_and_publish(report, staged, out_dir)
    return report


def prepare_preferences(sources: list[str], out_dir: str, model: str, transform: TransformOptions,
                        gates: GateOptions, work_dir: str, min_rating_margin: float,
                        preference: PreferenceOptions) -> dict[str, Any]:
    """The prepare steps on preference data; returns the report (method "dpo")."""
    settings = PreferenceShardSettings.for_preferences(model, transform, gates.validation_fraction, min_rating_margin)
    staged = clear_previous_outputs(out_dir, sources, work_dir)
    plan = plan_preference_input(sources)
    inputs = fingerprint_inputs(plan, settings, gates, preference)  # first, as in prepare
    shards = prepare_preference_shard_task.map(plan.shards, unmapped(settings), unmapped(work_dir))
    results = shards.result()
    split = reduce_preference_shards(shards, staged, out_dir)
    totals = compute_totals(shards, split)
    figures = preference_figures(split.features_path)
    parameters = {**suite_parameters(gates, settings.training_context), **preference.suite_parameters()}
    quality = check_quality(split.features_path, totals, parameters, Path(out_dir), figures={"preference": figures})
    budget = estimate_preference_budget(split.features_path, model, settings.encoding, count_too_long(results),
                                        gates.n_epochs, gates.max_cost_usd)
    report = write_report(shards, plan.fingerprints, plan.skipped_sources, split, quality, budget, out_dir,
                          {"method": "dpo", "preference": figures, "inputs_sha256": inputs})
    gate_and_publish(report, staged, out_dir)
    return report


def gate_and_publish(report: dict[str, Any], staged: str, out_dir: str) -> None:
    """Fail the run by the gate that failed; else publish train/validation."""
    gates = enforce_gates(report, staged, return_state=True)
    gates.result()  # raises the gate's error: QualityGateFailed or BudgetExceeded
    # No data passes from the gates to publishing: wait_for draws the edge in the graph.
    publish_dataset(staged, out_dir, wait_for=[gates])


if __name__ == "__main__":
    prepare(["data/raw/*"], out_dir=".ftflow/runs/prepare")
