"""Evaluate preferences: on held-out pairs, how often a model answers like the preferred output.

Per held-out pair the model answers the pair's input; the answer *wins* when it is closer to
the preferred output than to the non-preferred one. Closer means a higher token F1
(`evaluate.token_f1`: case-folded words as multisets) against the output's full text, so the
keys and values of a JSON answer count as words and a JSON answer is closer to a JSON
output than to prose with the same sentences. Equal F1 counts as half a win.

The win rate is the mean over pairs, with a 95% percentile bootstrap interval (resampling
pairs, fixed seed). The format and language rates and token F1 against the preferred output
come from the supervised evaluation (`evaluate.aggregate`) on the same answers.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prefect import task

from ftflow.caching import RUN_CACHE
from ftflow.catalog import base_model_of
from ftflow.client import make_client
from ftflow.jsonl import iter_records
from ftflow.provider import retry_on_transient
from ftflow.settings import Settings
from tasks.evaluate import EvalCase, aggregate, evaluate_model, token_f1

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0


@dataclass
class HeldOutPair:
    case: EvalCase  # the input, and the preferred output as the reference
    non_preferred: str


def win(answer: str, preferred: str, non_preferred: str) -> float:
    """1 when the answer is closer (token F1) to the preferred output, 0 when to the other, 0.5 on a tie."""
    to_preferred, to_other = token_f1(answer, preferred), token_f1(answer, non_preferred)
    return 1.0 if to_preferred > to_other else 0.0 if to_preferred < to_other else 0.5


def bootstrap_interval(values: list[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean."""
    if not values:
        return 0.0, 0.0
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))
    tail = (1 - level) / 2
    return means[int(tail * resamples)], means[min(resamples - 1, int((1 - tail) * resamples))]


def win_rate(wins: list[float]) -> dict[str, Any]:
    low, high = bootstrap_interval(wins)
    return {"win_rate": round(sum(wins) / len(wins), 4) if wins else 0.0,
            "win_rate_ci95": [round(low, 4), round(high, 4)], "pairs": len(wins)}


def held_out_pairs(validation: Path, limit: int) -> list[HeldOutPair]:
    """Held-out pairs with text outputs: the input messages, the preferred and the non-preferred text."""
    pairs = []
    for record in iter_records(validation):
        preferred = record["preferred_output"][0].get("content")
        other = record["non_preferred_output"][0].get("content")
        if isinstance(preferred, str) and isinstance(other, str):
            pairs.append(HeldOutPair(EvalCase(record["input"]["messages"], preferred), other))
        if len(pairs) >= limit:
            break
    return pairs


@task(name="evaluate-preferences", cache_policy=RUN_CACHE, retries=2, retry_delay_seconds=[5, 30],
      retry_condition_fn=retry_on_transient)
def evaluate_preferences(run_dir: str, candidate: str, current: str | None, settings: Settings) -> dict[str, Any]:
    """Return each model's win rate (with its interval) and rates on held-out pairs; writes eval.json."""
    from prefect.artifacts import create_table_artifact

    pairs = held_out_pairs(Path(run_dir) / "validation.jsonl", settings.eval_max_examples)
    cases = [p.case for p in pairs]
    schema = json.loads(Path(settings.eval_json_schema).read_text("utf-8")) if settings.eval_json_schema else None
    client = make_client(settings, max_retries=5)
    runs = {"candidate": (candidate, None), "baseline": (base_model_of(candidate), settings.baseline_system_prompt)}
    if current and current != candidate:
        runs["current"] = (current, None)
    results: dict[str, Any] = {"method": "dpo", "examples": len(pairs), "language": settings.eval_language,
                               "similarity": "token F1 against each output's full text", "models": {}}
    per_example: dict[str, list[dict[str, Any]]] = {}
    for role, (model, prompt) in runs.items():
        scores = evaluate_model(client, model, cases, system_prompt=prompt, language=settings.eval_language,
                                schema=schema, concurrency=settings.eval_concurrency)
        wins = [win(s.answer, p.case.reference, p.non_preferred) for s, p in zip(scores, pairs, strict=True)]
        results["models"][role] = {"model": model, **aggregate(scores), **win_rate(wins)}
        per_example[role] = [{**asdict(s), "win": w} for s, w in zip(scores, wins, strict=True)]
    Path(run_dir, "eval.json").write_text(json.dumps({**results, "per_example": per_example}, indent=2,
                                                     ensure_ascii=False), "utf-8")
    create_table_artifact([{"role": role, **metrics} for role, metrics in results["models"].items()],
                          key="ftflow-eval", description="Held-out preference pairs: win rate of each model")
    return results
