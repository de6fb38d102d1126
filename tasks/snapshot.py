"""Snapshot: the promoted model's answers on a run's held-out examples, kept while it still serves.

A provider retires fine-tuned models with their base snapshot (OpenAI: no new jobs after
2027-01-06). The snapshot keeps what the incumbent answered, scored, in the run folder, so a
later candidate can still be compared with it on the same examples after it stops serving.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import task

from ftflow.caching import RUN_CACHE
from ftflow.providers.base import retry_on_transient
from ftflow.run_resources import RunResources
from ftflow.settings import Settings
from tasks.evaluate import aggregate, cases_from, evaluate_model


def snapshot_path(run_dir: str | Path, model: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model)
    return Path(run_dir) / f"snapshot-{safe}.json"


@task(name="snapshot-answers", cache_policy=RUN_CACHE, retries=2, retry_delay_seconds=[5, 30],
      retry_condition_fn=retry_on_transient)
def snapshot_answers(run_dir: str, model: str, backend: str | None, settings: Settings,
                     resources: RunResources) -> dict[str, Any]:
    """Return the snapshot (metrics and every answer) of `model` on the run's held-out set; writes it."""
    validation = Path(run_dir) / "validation.jsonl"
    cases = cases_from(validation, settings.eval_max_examples)
    schema = json.loads(Path(settings.eval_json_schema).read_text("utf-8")) if settings.eval_json_schema else None
    chat = resources.chat_for(model, backend=backend)
    scores = evaluate_model(chat, model, cases, system_prompt=None, language=settings.eval_language,
                            schema=schema, concurrency=settings.eval_concurrency)
    digest = hashlib.sha256(json.dumps([asdict(c) for c in cases], sort_keys=True).encode()).hexdigest()
    snapshot = {"model": model, "backend": backend or settings.backend, "served_as": chat.name, "taken_at": time.time(),
                "validation_file": str(validation), "cases_sha256": digest, "metrics": aggregate(scores),
                "per_example": [asdict(s) for s in scores], "settings": settings.effective()}
    snapshot_path(run_dir, model).write_text(json.dumps(snapshot, indent=2, ensure_ascii=False), "utf-8")
    return snapshot
