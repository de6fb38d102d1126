"""The deployments of prefect.yaml as `serve()`-able objects: one definition for both ways to run."""

from __future__ import annotations

from importlib.abc import Traversable
from typing import Any

import yaml

from ftflow.errors import ConfigError
from ftflow.resources import code_root, resource

PREFECT_YAML = resource("prefect.yaml")


def load_deployments(path: Traversable = PREFECT_YAML) -> list[Any]:
    """Return RunnerDeployments built from prefect.yaml (entrypoint, schedule, parameters, tags)."""
    from prefect.flows import load_flow_from_entrypoint

    spec = yaml.safe_load(path.read_text("utf-8"))
    deployments = []
    for entry in spec.get("deployments", []):
        entrypoint = str(code_root() / entry["entrypoint"])
        try:
            flow = load_flow_from_entrypoint(entrypoint)
        except Exception as exc:  # a broken entrypoint must name itself
            raise ConfigError(f"{path}: deployment {entry['name']}: cannot load {entry['entrypoint']}: {exc}") from exc
        schedules = entry.get("schedules") or []
        kwargs: dict[str, Any] = {}
        if schedules:
            kwargs["cron"] = schedules[0]["cron"]
        deployments.append(flow.to_deployment(
            name=entry["name"], description=entry.get("description"), tags=entry.get("tags"),
            parameters=entry.get("parameters") or {}, **kwargs))
    return deployments
