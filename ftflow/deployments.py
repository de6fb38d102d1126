"""The deployments of prefect.yaml as `serve()`-able objects: one definition for both ways to run.

`prefect deploy` reads prefect.yaml itself; `ftflow serve` builds the same deployments from it
here: entrypoint, description, tags, parameters, schedules (cron with its timezone) and the
concurrency limit. tests/integration/ui compares the two through the Prefect API.
"""

from __future__ import annotations

from importlib.abc import Traversable
from typing import Any

import yaml

from ftflow.errors import ConfigError
from ftflow.resources import code_root, resource

PREFECT_YAML = resource("prefect.yaml")


def schedule_of(spec: dict[str, Any], where: str) -> Any:
    """A prefect.yaml schedule entry as a Prefect schedule; only cron entries are used here."""
    from prefect.schedules import Cron

    options = dict(spec)
    if "cron" not in options:
        raise ConfigError(f"{where}: only cron schedules are supported, not {sorted(options)}")
    return Cron(options.pop("cron"), **options)


def concurrency_of(spec: Any) -> Any:
    from prefect.client.schemas.objects import ConcurrencyLimitConfig

    return ConcurrencyLimitConfig(**spec) if isinstance(spec, dict) else spec


def load_deployments(path: Traversable = PREFECT_YAML) -> list[Any]:
    """Return RunnerDeployments built from prefect.yaml (entrypoint, schedules, parameters, tags, limits)."""
    from prefect.flows import load_flow_from_entrypoint

    spec = yaml.safe_load(path.read_text("utf-8"))
    deployments = []
    for entry in spec.get("deployments", []):
        where = f"{path}: deployment {entry['name']}"
        entrypoint = str(code_root() / entry["entrypoint"])
        try:
            flow = load_flow_from_entrypoint(entrypoint)
        except Exception as exc:  # a broken entrypoint must name itself
            raise ConfigError(f"{where}: cannot load {entry['entrypoint']}: {exc}") from exc
        deployments.append(flow.to_deployment(
            name=entry["name"], description=entry.get("description"), tags=entry.get("tags"),
            parameters=entry.get("parameters") or {},
            schedules=[schedule_of(s, where) for s in entry.get("schedules") or []],
            concurrency_limit=concurrency_of(entry.get("concurrency_limit"))))
    return deployments
