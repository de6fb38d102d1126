"""Report: gather every stage's figures into `report.json`, check the accounting, apply the gates.

The accounting invariant: every record read ends up in exactly one place, so
`records_read == train + validation + sum(rejected) + duplicates_removed`.
Gates hold: train/validation are written to a staging folder and moved into the output
folder only after the gates pass; a failed gate leaves the report and the rejections.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from ftflow.caching import RUN_CACHE
from ftflow.errors import BudgetExceeded, ConfigError, FtflowError, QualityGateFailed
from ftflow.jsonl import file_sha256, loads_exact
from ftflow.outputs import Manifest, refuse_foreign, refuse_sources_inside, writing
from ftflow.process_exit import signals_deferred
from ftflow.settings import Settings, default
from tasks.budget import Budget
from tasks.reduce import ReduceResult
from tasks.shards.store import ShardResult
from tasks.suites import QualityResult

if TYPE_CHECKING:
    from tasks.moderation import ModerationResult
    from tasks.quarantine import Quarantined

STAGES = ("extract", "quality")  # where a record can be rejected
OUTPUTS = ("train.jsonl", "validation.jsonl", "rejected.jsonl", "duplicates.jsonl", "quality.json",
           "features.parquet", "report.json")
STAGED = ".staged"  # train/validation wait here until the gates pass


@dataclass(frozen=True)
class PreferenceGates:
    """The `preference` suite's gates on DPO pairs."""

    min_pairs: int = default("dpo_min_pairs")
    max_length_bias: float = default("dpo_max_length_bias")
    max_near_identical_share: float = default("dpo_max_near_identical_share")


@dataclass(frozen=True)
class GateOptions:
    """The quality and budget gates: derived from Settings (`from_settings`), whose defaults these are.

    `preference`: the preference suite's gates, for method dpo (None: supervised)."""

    validation_fraction: float = default("validation_fraction")
    n_epochs: int | None = default("n_epochs")
    max_cost_usd: float | None = default("max_cost_usd")
    min_train_examples: int = default("min_train_examples")
    max_rejected_share: float = default("max_rejected_share")
    preference: PreferenceGates | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> GateOptions:
        preference = PreferenceGates(
            min_pairs=settings.dpo_min_pairs, max_length_bias=settings.dpo_max_length_bias,
            max_near_identical_share=settings.dpo_max_near_identical_share) if settings.method == "dpo" else None
        return cls(validation_fraction=settings.validation_fraction, n_epochs=settings.n_epochs,
                   max_cost_usd=settings.max_cost_usd, min_train_examples=settings.min_train_examples,
                   max_rejected_share=settings.max_rejected_share, preference=preference)


def merge_counts(*counts: dict[str, int]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for part in counts:
        for key, value in part.items():
            merged[key] = merged.get(key, 0) + value
    return dict(sorted(merged.items()))


@dataclass
class ShardTotals:
    """The shards' counters added up."""

    records_read: int
    rejected_by_stage: dict[str, dict[str, int]]
    trimmed_turns: int
    merged_turns: int
    pii: dict[str, int]
    shards: int
    reused: int

    @property
    def rejected(self) -> dict[str, int]:
        return merge_counts(*self.rejected_by_stage.values())


def add_up(results: list[ShardResult]) -> ShardTotals:
    return ShardTotals(
        records_read=sum(r.records_read for r in results),
        rejected_by_stage={stage: merge_counts(*(r.rejected[stage] for r in results)) for stage in STAGES},
        trimmed_turns=sum(r.trimmed_turns for r in results),
        merged_turns=sum(r.merged_turns for r in results),
        pii=merge_counts(*(r.pii for r in results)),
        shards=len(results),
        reused=sum(r.reused for r in results),
    )


def count_too_long(results: list[ShardResult]) -> int:
    """Examples rejected for more tokens than the training context (the budget reports them)."""
    return sum(r.rejected["quality"].get("too_long", 0) for r in results)


def dataset_totals(results: list[ShardResult], split: ReduceResult) -> dict[str, Any]:
    """One row of dataset figures for the `dataset` suite."""
    totals = add_up(results)
    rejected = sum(totals.rejected.values())
    return {
        "records_read": totals.records_read,
        "train_examples": split.train,
        "validation_examples": split.validation,
        "rejected": rejected,
        "rejected_share": rejected / totals.records_read if totals.records_read else 1.0,
        "duplicates_removed": split.duplicates_removed,
    }


def suite_parameters(gates: GateOptions, training_context: int) -> dict[str, Any]:
    """The parameters the suites' expectations take (expectations/*.json)."""
    return {
        "max_tokens": training_context,
        "min_train_examples": gates.min_train_examples,
        "max_rejected_share": gates.max_rejected_share,
        "min_validation_examples": 1 if gates.validation_fraction > 0 else 0,
        **(asdict(gates.preference) if gates.preference else {}),
    }


def dataset_sha256(train: Path, validation: Path) -> str:
    """Fingerprint of what would be uploaded: the two files' hashes (written in canonical order)."""
    return combined_sha256(file_sha256(train), file_sha256(validation))


def combined_sha256(train_sha256: str, validation_sha256: str) -> str:
    """`dataset_sha256` from the two files' own sha256 (the reduce hashes them as it writes them)."""
    return hashlib.sha256(f"{train_sha256}\n{validation_sha256}".encode()).hexdigest()


def concatenate(parts: list[Path], target: Path) -> None:
    with open(target, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out)


def build_report(
    *,
    results: list[ShardResult],
    fingerprints: dict[str, str],
    skipped_sources: list[str],
    split: ReduceResult,
    quality: QualityResult,
    budget: Budget,
    out_dir: Path,
    moderation: ModerationResult | None = None,
    provider_rules: Quarantined | None = None,
) -> dict[str, Any]:
    totals = add_up(results)
    moderated = moderation.rejected if moderation else {}
    ruled = provider_rules.rejected if provider_rules else {}
    rejected = merge_counts(totals.rejected, moderated, ruled)
    accounted = split.train + split.validation + sum(rejected.values()) + split.duplicates_removed
    if accounted != totals.records_read:
        # A bug of ours, never bad data: every record must be somewhere.
        raise FtflowError(f"accounting mismatch: read {totals.records_read}, accounted {accounted}")
    gate_failures = list(quality.failed)
    if not budget.within_budget:
        gate_failures.append(
            str(BudgetExceeded(estimated_usd=budget.estimated_cost_usd, max_usd=budget.max_cost_usd or 0))
        )
    return {
        "records_read": totals.records_read,
        "examples_written": {"train": split.train, "validation": split.validation},
        "rejected": rejected,
        "rejected_by_stage": {**totals.rejected_by_stage,
                              **({"moderation": moderated} if moderation and moderation.mode == "reject" else {}),
                              **({"provider_rules": ruled} if ruled else {})},
        "duplicates_removed": split.duplicates_removed,
        "trimmed_turns": totals.trimmed_turns,
        "merged_turns": totals.merged_turns,
        "pii": totals.pii,
        "shards": {"total": totals.shards, "reused": totals.reused},
        "model": budget.model,
        "encoding": budget.encoding,
        "training_context": budget.training_context,
        "tokens": budget.tokens,
        "n_epochs": budget.n_epochs,
        "n_epochs_source": budget.n_epochs_source,
        "billing_tokens": budget.billing_tokens,
        "estimated_cost_usd": budget.estimated_cost_usd,
        "max_cost_usd": budget.max_cost_usd,
        "prices_as_of": budget.prices_as_of,
        "dataset_sha256": combined_sha256(split.train_sha256, split.validation_sha256),
        "sources": fingerprints,
        "sources_skipped": len(skipped_sources),
        "skipped_sources": skipped_sources,
        "quality": quality.to_dict(),
        "gate": {"passed": not gate_failures, "failures": gate_failures, "within_budget": budget.within_budget},
        "files": {name: str(out_dir / name) for name in OUTPUTS},
        **({"moderation": moderation.report()} if moderation else {}),
    }


def report_markdown(report: dict[str, Any]) -> str:
    """The `ftflow-prepare-report` artifact: a table of figures (its first row, the method, is its header:
    an empty header row reads as a glitch in the Prefect UI), then the rejection reasons and gate failures."""
    written = report["examples_written"]
    rows = [
        ("method", report.get("method", "supervised")),
        ("records read", f"{report['records_read']:,}"),
        ("train / validation", f"{written['train']:,} / {written['validation']:,}"),
        ("rejected", f"{sum(report['rejected'].values()):,}"),
        ("duplicates removed", f"{report['duplicates_removed']:,}"),
        ("PII found", f"{sum(report['pii'].values()):,}"),
        ("tokens (total / p95 example)", f"{report['tokens']['total']:,} / {report['tokens']['p95_example']:,}"),
        ("epochs", report["n_epochs"]),
        ("billing tokens", f"{report['billing_tokens']:,}"),
        ("estimated cost", f"${report['estimated_cost_usd']:.4f} (prices as of {report['prices_as_of']})"),
        ("gate", "passed" if report["gate"]["passed"] else "FAILED"),
        ("inputs digest", (report.get("inputs_sha256") or "none (a SQL source)")[:12]),
    ]
    (key, value), *rest = rows
    lines = [f"# Prepared dataset `{report['dataset_sha256'][:12]}` for {report['model']}", "",
             f"| {key} | {value} |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rest]
    if report["rejected"]:
        lines += ["", "| rejected for | records |", "|---|---|"]
        lines += [f"| `{k}` | {v:,} |" for k, v in report["rejected"].items()]
    for failure in report["gate"]["failures"]:
        lines.append(f"\n- gate: {failure}")
    return "\n".join(lines)


def check_out_dir(path: Path) -> None:
    """ConfigError unless path is, or can become, a folder (no existing file in the way)."""
    for part in (path, *path.parents):
        if part.exists() or part.is_symlink():
            if not part.is_dir():
                raise ConfigError(f"--out {path}: {part} is an existing file, not a folder")
            return


STAGED_OUTPUTS = tuple(f"{STAGED}/{name}" for name in ("train.jsonl", "validation.jsonl"))


def clear_outputs(out_dir: Path, sources: list[str], work_dir: Path) -> None:
    """Remove what an earlier run wrote in out_dir, so nothing stale sits beside a new report.

    Only files ftflow wrote, bytes unchanged, are removed (ftflow/outputs.py). Before anything
    is touched: a source inside out_dir or work_dir, or an output name held by a file ftflow
    did not write, stops the run (ConfigError).
    """
    refuse_sources_inside(sources, {"--out": out_dir, "work_dir": work_dir})
    refuse_foreign(out_dir, (*OUTPUTS, *STAGED_OUTPUTS), "--out")
    Manifest(out_dir).clear()
    remove_empty(out_dir / STAGED)


def remove_empty(folder: Path) -> None:
    """Remove a folder of ftflow's if nothing is left in it."""
    with contextlib.suppress(OSError):  # absent, or holding something ftflow did not write
        folder.rmdir()


@task(name="clear-outputs", cache_policy=NO_CACHE)
def clear_previous_outputs(out_dir: str, sources: list[str], work_dir: str) -> str:
    """Return the folder where train/validation wait until the gates pass, after clearing out_dir."""
    check_out_dir(Path(out_dir))
    clear_outputs(Path(out_dir), sources, Path(work_dir))
    return str(Path(out_dir) / STAGED)


@task(name="compute-totals", cache_policy=RUN_CACHE)
def compute_totals(results: list[ShardResult], split: ReduceResult) -> dict[str, Any]:
    """Return the dataset-level figures the `dataset` suite checks."""
    return dataset_totals(results, split)


@task(name="write-report", cache_policy=RUN_CACHE)
def write_report(
    results: list[ShardResult],
    fingerprints: dict[str, str],
    skipped_sources: list[str],
    split: ReduceResult,
    quality: QualityResult,
    budget: Budget,
    out_dir: str,
    method: str,
    inputs_sha256: str | None,
    figures: dict[str, dict[str, Any]],
    moderation: ModerationResult,
    provider_rules: Quarantined,
) -> dict[str, Any]:
    """Return the run report; writes `report.json` and `rejected.jsonl` (every shard's, in input order,
    then those moderation quarantined, then those the provider rules quarantined).

    `method` and the figures of the method's own suite (`figures`: DPO's `preference`) are
    reported as they are; `inputs_sha256` is what the dataset is made of (tasks/lineage.py)."""
    out = Path(out_dir)
    ordered = sorted(results, key=lambda r: r.index)
    quarantined = [Path(stage.rejected_path) for stage in (moderation, provider_rules)
                   if stage is not None and stage.rejected_path]
    with writing(out, ("rejected.jsonl", "report.json")):
        concatenate([*(Path(r.directory) / "rejected.jsonl" for r in ordered), *quarantined], out / "rejected.jsonl")
        report = {**build_report(results=results, fingerprints=fingerprints, skipped_sources=skipped_sources,
                                 split=split, quality=quality, budget=budget, out_dir=out, moderation=moderation,
                                 provider_rules=provider_rules),
                  "method": method, **figures, "inputs_sha256": inputs_sha256}
        (out / "report.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    Manifest(out).clear(os.path.relpath(path, out) for path in quarantined)  # now in rejected.jsonl
    create_markdown_artifact(
        report_markdown(report),
        key="ftflow-prepare-report",
        description="What prepare read, kept, rejected and would cost",
    )
    return report


def rejection_causes(rejected: dict[str, int], rejected_file: Path, shown: int = 3, detail_chars: int = 120) -> str:
    """The most frequent rejection reasons, each with its count and its first record's place and detail.

    What a failed `dataset.*` check (too few examples, too many rejected) needs to name its cause:
    a `.jsonl.gz` that is not gzip says `corrupt_file`, where, and what the decompressor said.
    `rejected.jsonl` is read only up to the first record of each shown reason.
    """
    top = sorted(rejected.items(), key=lambda item: (-item[1], item[0]))[:shown]
    first: dict[str, str] = {}
    wanted = {reason for reason, _ in top}
    if rejected_file.exists():
        with open(rejected_file, "rb") as f:
            for line in f:
                if wanted <= first.keys():
                    break
                row = loads_exact(line)
                if row["reason"] in wanted and row["reason"] not in first:
                    detail = " ".join(str(row.get("detail") or "").split())
                    if len(detail) > detail_chars:
                        detail = detail[: detail_chars - 3] + "..."
                    first[row["reason"]] = f"{row['source']} {row['loc']}" + (f": {detail}" if detail else "")
    causes = [f"{reason} {n} (first: {first.get(reason, 'not in rejected.jsonl')})" for reason, n in top]
    more = len(rejected) - len(top)
    return "rejected: " + ", ".join(causes) + (f", and {more} more reasons (see rejected.jsonl)" if more > 0 else "")


# Drift also moves when only the settings changed (say, a run without --system-prompt after runs
# with one): the gate's message says what it compared with, and what to do.
DRIFT_HINT = (". Drift compares with the last successful run of this base model; a changed setting (such as "
              "--system-prompt) moves it too: run with that run's settings, or raise FTFLOW_DRIFT_MAX_* for this run")


@task(name="enforce-gates", cache_policy=NO_CACHE)
def enforce_gates(report: dict[str, Any], staged_dir: str) -> None:
    """Raise when the quality suites or the budget failed, removing the staged train/validation files."""
    if report["gate"]["passed"]:
        return
    remove_staged(Path(staged_dir))
    if report["quality"]["success"] is False:
        failed = report["quality"]["failed"]
        hint = DRIFT_HINT if any(check.startswith("drift.") for check in failed) else ""
        if report["rejected"] and any(check.startswith("dataset.") for check in failed):
            hint += "; " + rejection_causes(report["rejected"], Path(report["files"]["rejected.jsonl"]))
        raise QualityGateFailed("quality gate failed: " + "; ".join(failed) + hint, failed=failed)
    raise BudgetExceeded(estimated_usd=report["estimated_cost_usd"], max_usd=report["max_cost_usd"])


@task(name="publish-dataset", cache_policy=NO_CACHE)
def publish_dataset(staged_dir: str, out_dir: str) -> None:
    """Move train/validation into out_dir: only now is the folder trainable.

    Both or neither: a stopping signal waits until both are moved. Their new names are recorded
    first, so even a run killed in between leaves only files the next run may clear.
    """
    out = Path(out_dir)
    moves = {f"{STAGED}/{name}": name for name in ("train.jsonl", "validation.jsonl")}
    manifest = Manifest(out)
    with signals_deferred():
        manifest.copied(moves)
        for name in moves.values():
            os.replace(Path(staged_dir) / name, out / name)
        manifest.forget(moves)
    remove_empty(Path(staged_dir))


def remove_staged(staged_dir: Path) -> None:
    """Remove the staged train/validation files ftflow wrote, and their folder once empty."""
    Manifest(staged_dir.parent).clear(STAGED_OUTPUTS)
    remove_empty(staged_dir)
