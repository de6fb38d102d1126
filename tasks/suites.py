"""The quality suites themselves, without Prefect: run them on frames or on a features file.

What `check-quality` (tasks/quality.py) runs, and what the command's suites process imports
(ftflow/suites_process.py): that process imports Great Expectations and this module, not
Prefect, which added almost half as much again. The suites are described in tasks/quality.py.
"""

from __future__ import annotations

import functools
import json
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ftflow.resources import resource_text
from tasks.features import FEATURE_SCHEMA, DriftOptions, drift_changes, feature_summary

if TYPE_CHECKING:
    import pandas as pd

SUITES = ("examples", "dataset", "drift")


def load_suite(name: str) -> Any:
    import great_expectations as gx

    return gx.ExpectationSuite(**json.loads(resource_text(f"expectations/{name}.json")))


@dataclass
class QualityResult:
    success: bool
    failed: list[str]
    suites: dict[str, Any]
    features: dict[str, Any]
    drift: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"success": self.success, "failed": self.failed, "features": self.features, "drift": self.drift}


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _bounds(kwargs: dict[str, Any]) -> str:
    bounds = [f"{op} {_number(kwargs[key])}" for key, op in (("min_value", ">="), ("max_value", "<=")) if
              kwargs.get(key) is not None]
    if "value_set" in kwargs:
        bounds.append(f"in {kwargs['value_set']}")
    text = " and ".join(bounds)
    return f"{text} in at least {kwargs['mostly']:.0%} of rows" if kwargs.get("mostly", 1) < 1 else text


def _observed(result: dict[str, Any]) -> str:
    if "unexpected_count" in result:  # a per-row expectation: how many rows broke it
        return (f"{result['unexpected_count']} of {result['element_count']} rows "
                f"({result.get('unexpected_percent') or 0:.1f}%) outside")
    return _number(result.get("observed_value"))


def _describe(suite_name: str, result: Any) -> tuple[list[str], dict[str, Any]]:
    """Each expectation is named `<suite>.<column>`; a failure says what was seen and what was expected."""
    failed = []
    rows = []
    for r in result.results:
        config = r.expectation_config
        kwargs = {k: v for k, v in config.kwargs.items() if k != "batch_id"}
        name = f"{suite_name}.{kwargs.get('column', 'table')}"
        observed = _observed(r.result)
        rows.append(
            {
                "name": name,
                "expectation": config.type,
                "kwargs": kwargs,
                "success": bool(r.success),
                "observed": observed,
                "notes": config.meta.get("notes"),
            }
        )
        if not r.success:
            failed.append(f"{name}: {observed}, expected {_bounds(kwargs)}")
    return failed, {"success": bool(result.success), "statistics": result.statistics, "results": rows}


# GX's suite-parameter parser (pyparsing parse actions, arity probed on first use) is not
# thread-safe: two flow runs in threads of one process failed with "push_first() missing 1
# required positional argument". Validations are short; one at a time per process.
_GX_LOCK = threading.Lock()


def _quiet_gx() -> None:
    """No 'Created temporary directory' notices: GX sets some of its module loggers to INFO on import."""
    import logging

    for name in [n for n in logging.root.manager.loggerDict if n.startswith("great_expectations.")]:
        logging.getLogger(name).setLevel(logging.WARNING)


@functools.cache
def _batch_definition(name: str) -> Any:
    """The whole-dataframe batch definition of one suite's frame, on one ephemeral context per process.

    Built once: each asset GX adds saves the context's whole project config again (a YAML dump),
    which cost about as much as the validations of a small prepare. Each run passes its own frame
    as a batch parameter. Called under _GX_LOCK.
    """
    return _pandas_source().add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")


@functools.cache
def _pandas_source() -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")  # after run_suites' _quiet_gx: it logs where it put its docs site
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # no tqdm bars in the run's output
    return context.data_sources.add_pandas("ftflow")


def run_suites(features: pd.DataFrame, totals: dict[str, Any], parameters: dict[str, Any],
               drift: DriftOptions = DriftOptions(), figures: dict[str, dict[str, Any]] | None = None) -> QualityResult:
    """Validate example features, dataset totals and their drift against the suites in expectations/.

    `figures` adds suites run on one row each (suite name -> row), e.g. `preference`.
    """
    import pandas as pd

    _quiet_gx()
    summary = feature_summary(features, totals)
    frames = {"examples": features, "dataset": pd.DataFrame([totals]),
              **{name: pd.DataFrame([row]) for name, row in (figures or {}).items()}}
    drift_info: dict[str, Any] = {"checked": drift.previous is not None, "previous": drift.previous}
    if drift.previous is not None:
        drift_info["changes"] = drift_changes(summary, drift.previous)
        frames["drift"] = pd.DataFrame([drift_info["changes"]])
    failed: list[str] = []
    suites: dict[str, Any] = {}
    with _GX_LOCK:
        for name, frame in frames.items():
            result = _batch_definition(name).get_batch(batch_parameters={"dataframe": frame}).validate(
                load_suite(name), result_format="SUMMARY", expectation_parameters={**parameters, **drift.parameters()}
            )
            suite_failed, suites[name] = _describe(name, result)
            failed += suite_failed
    return QualityResult(success=not failed, failed=failed, suites=suites, features=summary, drift=drift_info)


def quality_markdown(result: QualityResult) -> str:
    lines = [f"# Data quality: {'passed' if result.success else 'FAILED'}", ""]
    for name, suite in result.suites.items():
        lines += [f"## Suite `{name}`", "", "| check | expected | observed | ok |", "|---|---|---|---|"]
        for row in suite["results"]:
            lines.append(
                f"| `{row['name']}` | {_bounds(row['kwargs'])} | {row['observed']} | "
                f"{'yes' if row['success'] else '**no**'} |"
            )
        lines.append("")
    if not result.drift["checked"]:
        lines.append("Drift not checked: no earlier successful run to compare with.")
    return "\n".join(lines)


def run_suites_on_file(features_path: str, totals: dict[str, Any], parameters: dict[str, Any],
                       drift: DriftOptions, figures: dict[str, dict[str, Any]] | None) -> QualityResult:
    """`run_suites` on a features file (what the suites' process is sent: a path, not a frame)."""
    import pandas as pd

    # Where each example came from and its digest are text no suite checks: without them the
    # frame of a million examples is a few tens of MiB of numbers.
    columns = [name for name in FEATURE_SCHEMA.names if name not in ("source", "loc", "content_sha256")]
    return run_suites(pd.read_parquet(features_path, columns=columns), totals, parameters, drift, figures)
