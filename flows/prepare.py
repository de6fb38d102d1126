"""prepare: raw conversations -> validated, budgeted chat-format JSONL. Nothing is uploaded.

plan shards -> prepare each shard (extract, normalise, per-example checks, tokens, digests; in
parallel, one task run per shard) -> de-duplicate and split -> moderation pre-check (report or
quarantine; tasks/moderation.py) -> the backend's own per-example rules (quarantine;
tasks/provider_rules.py) -> GX suites -> budget -> report -> gates -> publish.
train/validation appear in out_dir only after the gates pass.
With method "dpo" the same steps run on preference pairs (tasks/preference_shard.py): one
shard per file, pairs de-duplicated and split by conversation, plus the `preference` suite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, unmapped

from flows import named_after_model, run_settings
from ftflow.settings import Settings
from tasks.budget import estimate_budget
from tasks.features import DriftOptions
from tasks.lineage import fingerprint_inputs
from tasks.moderation import ModerationOptions, moderate_examples
from tasks.preference_shard import (
    PreferenceOptions,
    PreferenceShardSettings,
    estimate_preference_budget,
    plan_preference_input,
    preference_figures,
    prepare_preference_shard_task,
    reduce_preference_shards,
)
from tasks.provider_rules import check_provider_rules, rules_backend
from tasks.quality import check_quality
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
from tasks.shards import DEFAULT_RUNNER, ShardSettings, plan_input, prepare_shard_task, shard_runner


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
    with shard_runner(settings):  # workers, dask_address: where the shards run
        if settings.method == "dpo":
            return prepare_preferences(sources, out_dir or str(settings.out_dir), settings)
        return prepare_examples(sources, out_dir or str(settings.out_dir), sql_url, query, previous_features,
                                settings)


def prepare_examples(sources: list[str], out_dir: str, sql_url: str | None, query: str | None,
                     previous_features: dict[str, Any] | None, settings: Settings) -> dict[str, Any]:
    """The prepare steps on chat data; returns the report (method "supervised")."""
    gates = GateOptions.from_settings(settings)
    shard_settings = ShardSettings.from_settings(settings, ExtractOptions.from_settings(settings, sql_url, query))
    work_dir = str(settings.work_dir)
    staged = clear_previous_outputs(out_dir, sources, work_dir)
    plan = plan_input(sources, shard_settings.extract, settings.shard_bytes, work_dir)
    # Before any later step: Prefect links inputs to earlier results by identity, and a budget
    # that holds settings.encoding would otherwise show as an input of this digest.
    moderation = ModerationOptions.from_settings(settings)
    inputs = fingerprint_inputs(plan, shard_settings, gates, moderation=moderation,
                                provider_rules=rules_backend(settings.backend))
    shards = prepare_shard_task.map(plan.shards, unmapped(shard_settings), unmapped(work_dir))
    results = shards.result()  # the first shard that failed fails the run, named
    # The tasks that read the shards get their futures: Prefect then draws each shard's edge to
    # them, which it cannot trace from results returned by a worker process.
    split = reduce_shards(shards, staged, out_dir)
    moderated = moderate_examples(split, staged, moderation, settings)  # report or quarantine flagged examples
    ruled = check_provider_rules(moderated.split, staged, settings.backend)  # quarantine what the backend refuses
    split = ruled.split
    totals = compute_totals(shards, split)
    quality = check_quality(split.features_path, totals, suite_parameters(gates, shard_settings.training_context),
                            Path(out_dir), DriftOptions.from_settings(settings, previous=previous_features))
    budget = estimate_budget(split.features_path, settings.model, shard_settings.encoding, count_too_long(results),
                             gates.n_epochs, gates.max_cost_usd,
                             {"train": split.train_path, "validation": split.validation_path})
    report = write_report(shards, plan.fingerprints, plan.skipped_sources, split, quality, budget, out_dir,
                          {"method": "supervised", "inputs_sha256": inputs}, moderation=moderated,
                          provider_rules=ruled)
    gate_and_publish(report, staged, out_dir)
    return report


def prepare_preferences(sources: list[str], out_dir: str, settings: Settings) -> dict[str, Any]:
    """The prepare steps on preference data; returns the report (method "dpo")."""
    gates, preference = GateOptions.from_settings(settings), PreferenceOptions.from_settings(settings)
    shard_settings = PreferenceShardSettings.from_settings(settings)
    staged = clear_previous_outputs(out_dir, sources, str(settings.work_dir))
    plan = plan_preference_input(sources)
    inputs = fingerprint_inputs(plan, shard_settings, gates, preference,  # first, as in prepare
                                provider_rules=rules_backend(settings.backend))
    shards = prepare_preference_shard_task.map(plan.shards, unmapped(shard_settings), unmapped(str(settings.work_dir)))
    results = shards.result()
    ruled = check_provider_rules(reduce_preference_shards(shards, staged, out_dir), staged, settings.backend)
    split = ruled.split
    totals = compute_totals(shards, split)
    figures = preference_figures(split.features_path)
    parameters = {**suite_parameters(gates, shard_settings.training_context), **preference.suite_parameters()}
    quality = check_quality(split.features_path, totals, parameters, Path(out_dir), figures={"preference": figures})
    budget = estimate_preference_budget(split.features_path, settings.model, shard_settings.encoding,
                                        count_too_long(results), gates.n_epochs, gates.max_cost_usd,
                                        {"train": split.train_path, "validation": split.validation_path})
    report = write_report(shards, plan.fingerprints, plan.skipped_sources, split, quality, budget, out_dir,
                          {"method": "dpo", "preference": figures, "inputs_sha256": inputs},
                          provider_rules=ruled)
    gate_and_publish(report, staged, out_dir)
    return report


def gate_and_publish(report: dict[str, Any], staged: str, out_dir: str) -> None:
    """Fail the run by the gate that failed; else publish train/validation."""
    gates = enforce_gates(report, staged, return_state=True)
    gates.result()  # raises the gate's error: QualityGateFailed or BudgetExceeded
    # No data passes from the gates to publishing: wait_for draws the edge in the graph.
    publish_dataset(staged, out_dir, wait_for=[gates])


if __name__ == "__main__":
    prepare(["data/raw/*"])
