"""Reconcile: before a run does anything, clean up after runs that died (SIGKILL, power loss).

- flow runs this machine started (the lineage store's `flow_runs`) that Prefect still shows
  `Running` although their process is gone are marked `Crashed`, with their child flow runs;
- ledger rows left `creating` get the job the provider has for their key, or `not_created`.

Then the current flow run is registered, so the next run can do the same for it.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from ftflow.exactly_once import process_identity, process_started
from ftflow.run_resources import RunResources
from ftflow.store.lineage import LineageStore
from tasks.jobs import reconcile_creating

log = logging.getLogger("ftflow.reconcile")


def process_alive(row: dict[str, Any]) -> bool:
    started = process_started(row["pid"])
    return started is not None and (started == "?" or row["process_started"] in ("", "?")
                                    or started == row["process_started"])


def crash_dead_flow_runs(lineage: LineageStore, prefect_client: Any, *, current: str | None) -> list[str]:
    """Mark `Crashed` the Running flow runs of dead processes of this host; returns their ids."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
    from prefect.states import Crashed

    host = process_identity()[0]
    crashed = []
    for row in lineage.open_flow_runs(host):
        run_id = row["flow_run_id"]
        if run_id == current:
            continue
        alive = process_alive(row)
        try:
            state = prefect_client.read_flow_run(run_id).state
        except Exception:  # noqa: BLE001 - a run another Prefect server knows: not ours to judge
            log.debug("flow run %s not readable", run_id, exc_info=True)
            continue
        if state is not None and state.is_running() and not alive:
            children = prefect_client.read_flow_runs(flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id])))
            for run in [prefect_client.read_flow_run(run_id), *children]:
                if run.state is not None and run.state.is_running():
                    message = f"process {row['pid']} on {host} died while this flow run was running"
                    prefect_client.set_flow_run_state(run.id, Crashed(message=message), force=True)
                    crashed.append(str(run.id))
        if state is None or state.is_final() or not alive or state.is_crashed():
            lineage.close_flow_run(run_id)
    return crashed


@task(name="reconcile-ledger", cache_policy=NO_CACHE)
def reconcile_ledger(resources: RunResources) -> dict[str, list[str]]:
    """Return what was cleaned up: flow runs marked Crashed, `creating` rows resolved."""
    from prefect.client.orchestration import get_client
    from prefect.logging import get_run_logger
    from prefect.runtime import flow_run

    logger = get_run_logger()
    current = flow_run.get_id()
    with get_client(sync_client=True) as prefect_client:
        crashed = crash_dead_flow_runs(resources.lineage, prefect_client, current=current)
    for run_id in crashed:
        logger.warning("marked flow run %s Crashed: the process running it is gone", run_id)
    provider = resources.provider
    with provider.explained():
        resolved = reconcile_creating(provider, resources.ledger)
    for line in resolved:
        logger.warning("ledger row left `creating` by a dead run: %s", line)
    if current:
        host, pid, started = process_identity()
        resources.lineage.register_flow_run(current, host=host, pid=pid, process_started=started)
    return {"crashed_flow_runs": crashed, "resolved_creating": resolved}
