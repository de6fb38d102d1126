"""Quality: the dataset suites (Great Expectations) on the prepared examples' features.

Great Expectations 1.x suites kept as JSON in `expectations/`, run on frames of numbers, never
raw text: `examples.json` on one row per kept example (tasks/features.py), `dataset.json` on
one row of dataset totals, `drift.json` on one row of how far this run's feature summary moved
from the last successful run's. Thresholds are suite parameters filled from settings
(`$PARAMETER`), so the JSON files hold no model-specific numbers. Every expectation there can
fail on the pipeline's own output (tests/integration/test_suites_flow.py shows each).

The suites' own code (run them, describe each result) is in tasks/suites.py, without Prefect.
The per-example rules that run before (OpenAI's file checks, the cookbook's) are in
tasks/checks.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from prefect import task
from prefect.artifacts import create_markdown_artifact

from ftflow.caching import RUN_CACHE
from ftflow.outputs import writing
from tasks.features import DriftOptions
from tasks.suites import QualityResult, quality_markdown, run_suites_on_file

if TYPE_CHECKING:
    from tasks.passes.base import RecordPass


@task(name="method-figures", cache_policy=RUN_CACHE)
def method_figures(features_path: str, record_pass: RecordPass) -> dict[str, dict[str, Any]]:
    """Return the figures the training method's own suite checks (DPO: `preference`; chat: none)."""
    return record_pass.figures(features_path)


@task(name="check-quality", cache_policy=RUN_CACHE)
def check_quality(
    features_path: str,
    totals: dict[str, Any],
    parameters: dict[str, Any],
    out_dir: Path,
    drift: DriftOptions = DriftOptions(),
    figures: dict[str, dict[str, Any]] | None = None,
) -> QualityResult:
    """Return the GX suites' verdict; writes `quality.json` and a markdown artifact."""
    from ftflow import suites_process

    result = suites_process.run(run_suites_on_file, features_path, totals, parameters, drift, figures)
    with writing(out_dir, ("quality.json",)):
        (out_dir / "quality.json").write_bytes(
            orjson.dumps(
                {**result.to_dict(), "parameters": {**parameters, **drift.parameters()}, "suites": result.suites},
                option=orjson.OPT_INDENT_2,
                default=str,
            )
        )
    create_markdown_artifact(
        quality_markdown(result),
        key="ftflow-data-quality",
        description="Great Expectations suites on the prepared dataset",
    )
    return result
