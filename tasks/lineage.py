"""Lineage tasks of a retrain run: what a dataset is made of, the unchanged-data skip, the run record."""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from prefect import task
from prefect.cache_policies import NO_CACHE

from ftflow.caching import RUN_CACHE
from ftflow.resources import resource_text
from ftflow.settings import Settings
from tasks.extract import fingerprint_sources, resolve_sources
from tasks.moderation import ModerationOptions
from tasks.passes import RecordPass, record_pass_for
from tasks.provider_rules import rules_backend
from tasks.report import GateOptions
from tasks.shards.plan import Plan
from tasks.suites import SUITES

if TYPE_CHECKING:  # the store (SQLAlchemy) is retrain's, not prepare's: loaded with the resources
    from ftflow.run_resources import RunResources
    from ftflow.store.lineage import LineageStore


# Code that shapes a dataset besides the per-shard code its settings' fingerprint covers.
DATASET_CODE = ("reduce.py", "report.py", "moderation.py", "quarantine.py", "provider_rules.py")


def new_run_id() -> str:
    """`<start time>-<flow run id>`: stable when Prefect retries the flow run, so are its folder and caches."""
    from prefect.runtime import flow_run

    run_id = flow_run.get_id()
    started = flow_run.get_scheduled_start_time()
    if run_id and started:
        return f"{started:%Y%m%dT%H%M%S}-{run_id[:8]}"
    return time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]


def inputs_sha256(sources: dict[str, str], record_pass: RecordPass, gates: GateOptions,
                  moderation: ModerationOptions, provider_rules: str | None) -> str:
    """One digest of what a prepared dataset is made of: each source's content (`sources`: path
    -> sha256), the settings and code that shape its records (`record_pass.outputs_fingerprint()`, the
    reduce), those that decide its gates (gate options, the suites), moderation where it
    removes records (`reject`; `report` changes none), and the backend whose rules quarantine
    records (`provider_rules`; None: no rules beyond OpenAI's)."""
    here = Path(__file__).resolve().parent
    code = hashlib.sha256()
    for name in DATASET_CODE:
        code.update((here / name).read_bytes())
    for suite in (*SUITES, "preference"):
        code.update(resource_text(f"expectations/{suite}.json").encode())
    described = {"sources": sources, "settings": record_pass.outputs_fingerprint(), "code": code.hexdigest(),
                 "gates": asdict(gates)}
    if moderation.mode == "reject":
        described["moderation"] = {"mode": moderation.mode, "model": moderation.model}
    if provider_rules is not None:
        described["provider_rules"] = provider_rules
    return hashlib.sha256(orjson.dumps(described, option=orjson.OPT_SORT_KEYS)).hexdigest()


@task(name="fingerprint-inputs", cache_policy=RUN_CACHE)
def fingerprint_inputs(plan: Plan, record_pass: RecordPass, gates: GateOptions, moderation: ModerationOptions,
                       provider_rules: str | None) -> str | None:
    """Return the digest of what this dataset is made of (`inputs_sha256` in its report); None
    when a source cannot be fingerprinted by its content: a SQL query's rows change without its
    text changing."""
    if any(shard.kind == "sql" for shard in plan.shards):
        return None
    return inputs_sha256(plan.fingerprints, record_pass, gates, moderation, provider_rules)


def current_inputs_sha256(sources: list[str], settings: Settings) -> str:
    """What `prepare` would record as `inputs_sha256` for these sources and settings, without
    preparing: each source file's sha256 as its plan takes it (read once, nothing written).
    retrain prepares files, never a SQL source."""
    record_pass = record_pass_for(settings)
    fingerprints = fingerprint_sources(resolve_sources(sources, skipped=[]), record_pass.extract)
    return inputs_sha256(fingerprints, record_pass, GateOptions.from_settings(settings),
                         ModerationOptions.from_settings(settings), rules_backend(settings.backend))


def unchanged_since_last_success(lineage: LineageStore, report: dict[str, Any]) -> dict[str, Any] | None:
    """The last successful run of this base model if it trained on exactly this dataset."""
    last = lineage.last_successful_run(report["model"])
    if last and last.get("dataset_sha256") == report["dataset_sha256"]:
        return last
    return None


def reconcile_tokens(estimated: int, actual: int | None, tolerance: float) -> dict[str, Any]:
    """Estimated billing tokens (prepare) against what the provider trained; flag a large gap."""
    if actual is None or estimated == 0:
        return {"estimated": estimated, "actual": actual, "difference_share": None, "flagged": actual is None}
    share = (actual - estimated) / estimated
    return {"estimated": estimated, "actual": actual, "difference_share": round(share, 4),
            "flagged": abs(share) > tolerance}


def run_cost_usd(trained: dict[str, Any], training_cost_usd: float | None) -> float:
    """What this run paid for training: nothing when it re-attached to a job an earlier run paid for."""
    if not trained["job_created"]:
        return 0.0
    return training_cost_usd if training_cost_usd is not None else trained["estimated_cost_usd"]


def training_summary(job: dict[str, Any], report: dict[str, Any], tolerance: float = 0.05) -> dict[str, Any]:
    """The run record's job part (pure: merges the job result with the prepare figures)."""
    return {
        "job_id": job["job_id"], "job_created": job["created"], "job_duration_seconds": job.get("duration_seconds"),
        "idempotency_key": job["idempotency_key"], "fine_tuned_model": job["fine_tuned_model"],
        "training_file": job["training_file"], "validation_file": job["validation_file"],
        "hyperparameters": job["hyperparameters"], "trained_tokens": job["trained_tokens"],
        "estimated_billing_tokens": report["billing_tokens"], "estimated_cost_usd": report["estimated_cost_usd"],
        "training_metrics": job["metrics"],
        "tokens_reconciliation": reconcile_tokens(report["billing_tokens"], job["trained_tokens"], tolerance),
    }


@task(name="check-unchanged", cache_policy=RUN_CACHE)
def check_unchanged(report: dict[str, Any], resources: RunResources, force: bool) -> str | None:
    """Return why the run can stop here (same data as the last successful run), or None."""
    if force:
        return None
    last = unchanged_since_last_success(resources.lineage, report)
    if last is None:
        return None
    return (f"dataset {report['dataset_sha256'][:12]} is unchanged since run {last['run_id']} "
            f"({last.get('fine_tuned_model')}); nothing to retrain (use --force to train anyway)")


@task(name="check-inputs-unchanged", cache_policy=RUN_CACHE)
def check_inputs_unchanged(sources: list[str], settings: Settings, force: bool,
                           resources: RunResources) -> dict[str, Any] | None:
    """Before preparing: if the last successful run's dataset was made from exactly these sources,
    settings and code, return its dataset digest and why this run stops; else None. Logs why not."""
    from prefect import get_run_logger

    log = get_run_logger()
    if force:
        log.info("--force: preparing whatever the last successful run was made of")
        return None
    model = settings.model
    last = resources.lineage.last_successful_run(model)
    recorded = ((last or {}).get("prepare") or {}).get("inputs_sha256")
    if last is None or recorded is None:
        log.info("preparing: %s", f"run {last['run_id']} recorded no inputs digest" if last
                 else f"no successful run of {model} to compare with")
        return None
    current = current_inputs_sha256(sources, settings)
    if current != recorded:
        log.info("preparing: inputs %s differ from run %s's %s", current[:12], last["run_id"], recorded[:12])
        return None
    return {"dataset_sha256": last["dataset_sha256"],
            "reason": f"sources and settings unchanged since run {last['run_id']} ({last.get('fine_tuned_model')}): "
                      f"dataset {last['dataset_sha256'][:12]} not prepared again; nothing to retrain "
                      "(use --force to train anyway)"}


@task(name="last-success-features", cache_policy=RUN_CACHE)
def last_success_features(settings: Settings, resources: RunResources) -> dict[str, Any] | None:
    """Return the feature summary of the last successful run of this base model (drift baseline), if
    any and if it trained by the same method: chat examples and preference pairs do not compare."""
    prepared = (resources.lineage.last_successful_run(settings.model) or {}).get("prepare") or {}
    if prepared.get("method", "supervised") != settings.method:
        return None
    return prepared.get("quality", {}).get("features")


@task(name="record-run", cache_policy=NO_CACHE)
def record_run(record: dict[str, Any], resources: RunResources, run_dir: str) -> dict[str, Any]:
    """Return the run record; saved to the lineage store and to run.json in the run folder."""
    from prefect.runtime import flow_run

    record = {**record, "flow_run_id": flow_run.get_id(), "finished_at": time.time()}
    resources.lineage.save_run(record)
    if record.get("job_id"):  # a run record names this job: no later run attaches to it again
        resources.ledger.consume_job(record["job_id"])
    Path(run_dir).mkdir(parents=True, exist_ok=True)  # a run that failed early has no folder yet
    Path(run_dir, "run.json").write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2, default=str))
    return record


def failure_reason(exc: BaseException) -> str:
    """One line: our errors say what went wrong in their message; anything else names its type too."""
    from ftflow.errors import FtflowError

    message = " ".join(str(exc).split())
    if isinstance(exc, FtflowError) and message:
        return message
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__

