"""snapshot-eval: record the promoted model's answers on a run's held-out set into that run folder."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows import named_after_model, run_settings
from ftflow.run_resources import RunResources
from ftflow.settings import Settings
from tasks.snapshot import snapshot_answers


@flow(name="snapshot-eval", flow_run_name=named_after_model("snapshot-eval"), log_prints=True)
def snapshot_eval(run_dir: str, model: str, backend: str | None = None, overrides: dict[str, Any] | None = None,
                  settings: Settings | None = None) -> dict[str, Any]:
    """Return the snapshot of `model` (answers, scores) on `run_dir`'s validation.jsonl.

    `backend`: where that model answers (the promoted run's backend; None: the backend setting).
    Settings: `overrides` over FTFLOW_* over ftflow.toml over the defaults, or the command's `settings`.
    """
    settings = run_settings("snapshot-eval", overrides, settings)
    resources = RunResources(settings)
    return snapshot_answers(run_dir, model, backend, settings, resources)


if __name__ == "__main__":
    snapshot_eval(".ftflow/runs/latest", "ft:gpt-4o-mini-2024-07-18:local:ftflow:0")  # the out_dir setting
