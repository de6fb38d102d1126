"""The flows of ftflow. Importing them applies ftflow's Prefect defaults first (ftflow.environment),
names the task finish lines in run logs (ftflow.runlog) and lets a flow run end without waiting
out its heartbeat thread's sleep (ftflow.heartbeats)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import ftflow  # noqa: F401 - applies the Prefect defaults before any flow module imports prefect
from ftflow.heartbeats import stop_heartbeats_without_waiting
from ftflow.runlog import name_finished_tasks

if TYPE_CHECKING:
    from ftflow.settings import Settings

T = TypeVar("T")
name_finished_tasks()
stop_heartbeats_without_waiting()


def untraced(subflow_result: T) -> T:
    """A subflow's result, passed on to tasks as plain values rather than as links to the subflow run.

    Prefect links every object of a subflow's result (by `id`, one level deep, strings
    included) to the subflow run, and records a `flow_run` input on each task that receives
    one of them, or an equal string it happens to share. The default Prefect UI cannot read
    such inputs: the run's Task Runs tab then says "No task runs". Forgetting the links keeps
    the tab working; the subflow still shows in the run's graph as the run's child.
    """
    from prefect.client.schemas.objects import RunType
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is not None:
        for key in [k for k, (_, run_type, _) in context.run_results.items() if run_type == RunType.FLOW_RUN]:
            del context.run_results[key]
    return subflow_result


def run_settings(flow_name: str, overrides: dict[str, Any] | None, settings: Settings | None) -> Settings:
    """The settings of this flow run: those its parent resolved (a subflow, or the command that
    started it), else the one resolution (a deployment or a direct call) of ftflow.toml, FTFLOW_*
    and the overrides a person gave. A subflow never resolves again."""
    from ftflow.errors import ConfigError
    from ftflow.settings import get_settings

    if settings is None:
        return get_settings(overrides)
    if overrides:
        raise ConfigError(f"{flow_name}: give overrides or resolved settings, not both")
    return settings


def run_model() -> str:
    """The base model of the flow run being created, for its name (given once, as it is created, so
    the log and the UI show the same one): from the settings its parent handed down, else from
    resolving its overrides; "unconfigured" when they do not resolve (the run then fails with the
    settings' own error line)."""
    from prefect.runtime import flow_run

    from ftflow.errors import ConfigError
    from ftflow.settings import get_settings

    parameters = flow_run.parameters
    given = parameters.get("settings")
    if given is not None:
        return given["model"] if isinstance(given, dict) else given.model
    try:
        return get_settings(parameters.get("overrides")).model
    except ConfigError:
        return "unconfigured"


def named_after_model(flow_name: str) -> Callable[[], str]:
    """A flow_run_name: `<flow>-<base model>`."""
    return lambda: f"{flow_name}-{run_model()}"
