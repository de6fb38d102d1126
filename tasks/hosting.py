"""Hosting: what ftflow's deployments cost per month, and removing those nobody needs any more.

An Azure fine-tuned deployment costs $1.70 an hour while it exists, idle or not (the price
table's `hosting`, ftflow/data/models.toml). After each promotion decision ftflow keeps the
deployments of the last `keep_deployments` promoted models of each base model (by default the
promoted one and the one before it, to roll back to) and removes every other deployment it
made itself, once the run that made it has ended (a deployment of a run still evaluating is
left alone). Deployments ftflow did not make are never touched: it only knows its own, from
its ledger.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from ftflow.catalog import load_catalog
from ftflow.formatting import usd
from ftflow.run_resources import RunResources
from ftflow.settings import Settings


def kept_models(promoted: list[dict[str, Any]], keep: int) -> dict[str, str]:
    """Model -> role ("promoted", "previous promoted", ...) of the last `keep` promoted models per base model.

    `promoted`: each promoted model once, newest promotion first (LineageStore.promoted_models).
    """
    roles = ["promoted", "previous promoted"]
    seen: Counter[str] = Counter()
    kept = {}
    for row in promoted:
        rank = seen[row["base_model"]]
        if rank < keep:
            kept[row["model"]] = roles[rank] if rank < len(roles) else f"promoted {rank + 1} ago"
        seen[row["base_model"]] += 1
    return kept


def stale_deployments(deployed: list[dict[str, Any]], promoted: list[dict[str, Any]], keep: int,
                      ended: set[str]) -> list[dict[str, Any]]:
    """The deployments to remove: not among the kept promoted models, and of a run that has ended."""
    kept = kept_models(promoted, keep)
    return [d for d in deployed if d["model"] not in kept and d["model"] in ended]


def backend_of_identity(identity: str) -> str:
    """`azure-v1:https://...` -> `azure`: the backend part of a provider identity (ftflow/providers)."""
    return identity.split(":", 1)[0].split("-", 1)[0]


def deployment_rows(resources: RunResources, keep: int) -> list[dict[str, Any]]:
    """Every deployment ftflow made, with its role and what it costs per month (None: no hosting fee)."""
    catalog = load_catalog()
    rows = []
    for d in resources.ledger.list_deployments():
        backend = backend_of_identity(d["provider"])
        roles = kept_models(resources.lineage.promoted_models(backend), keep)
        hosting = catalog.hosting_of(backend)
        rows.append({"backend": backend, "deployment": d["deployment"], "model": d["model"],
                     "role": roles.get(d["model"], "not promoted"), "created_at": d["created_at"],
                     "usd_per_month": hosting.usd_per_month if hosting else None})
    return rows


@task(name="remove-stale-deployments", cache_policy=NO_CACHE)
def remove_stale_deployments(candidate: str | None, settings: Settings, resources: RunResources) -> list[str]:
    """Return the deployments removed: ftflow's own, neither promoted nor the previous promoted model."""
    from prefect.logging import get_run_logger

    ledger, lineage = resources.ledger, resources.lineage
    provider = resources.provider
    deployed = ledger.list_deployments(provider.identity)
    if not deployed:
        return []
    ended = lineage.recorded_models() | ({candidate} if candidate else set())
    stale = stale_deployments(deployed, lineage.promoted_models(settings.backend), settings.keep_deployments, ended)
    hosting = load_catalog().hosting_of(settings.backend)
    logger = get_run_logger()
    removed = []
    for d in stale:
        with provider.explained():
            provider.remove_deployment(d["deployment"])
        ledger.forget_deployment(provider.identity, d["model"])
        removed.append(d["deployment"])
        logger.info("removed deployment %s of %s: neither promoted nor the previous promoted model "
                    "(keep_deployments = %d)%s", d["deployment"], d["model"], settings.keep_deployments,
                    f"; it cost {usd(hosting.usd_per_month)} per month" if hosting else "")
    return removed
