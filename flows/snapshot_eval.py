"""snapshot-eval: record the promoted model's answers on a run's held-out set into that run folder."""

from __future__ import annotations

from typing import Any

from prefect import flow

from ftflow.settings import get_settings
from tasks.snapshot import snapshot_answers


@flow(name="snapshot-eval", flow_run_name="snapshot-eval-{model}", log_prints=True)
def snapshot_eval(run_dir: str, model: str, backend: str | None = None) -> dict[str, Any]:
    """Return the snapshot of `model` (answers, scores) on `run_dir`'s validation.jsonl."""
    return snapshot_answers(run_dir, model, backend, get_settings())


if __name__ == "__main__":
    snapshot_eval(".ftflow/runs/prepare", "ft:gpt-4o-mini-2024-07-18:local:ftflow:0")
