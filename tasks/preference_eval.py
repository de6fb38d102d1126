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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prefect import task

from ftflow.caching import RUN_CACHE
from ftflow.catalog import base_model_of
from ftflow.jsonl import iter_records
from ftflow.providers.base import retry_on_transient
from ftflow.run_resources import RunResources
from ftflow.settings import Settings
from tasks.evaluate import (
    NOT_EVALUATED,
    EvalCase,
    aggregate,
    evaluate_model,
    examples_digest,
    token_f1,
)
from tasks.intervals import bootstrap_interval
from tasks.preference import pair_digest, pair_from_openai


@dataclass
class HeldOutPair:
    case: EvalCase  # the input, and the preferred output as the reference
    non_preferred: str


def win(answer: str, preferred: str, non_preferred: str) -> float:
    """1 when the answer is closer (token F1) to the preferred output, 0 when to the other, 0.5 on a tie."""
    to_preferred, to_other = token_f1(answer, preferred), token_f1(answer, non_preferred)
    return 1.0 if to_preferred > to_other else 0.0 if to_preferred < to_other else 0.5


def win_rate(wins: list[float]) -> dict[str, Any]:
    return {"win_rate": round(sum(wins) / len(wins), 4) if wins else None, "pairs": len(wins)}


def held_out_pairs(validation: Path, limit: int) -> list[HeldOutPair]:
    """Held-out pairs with text outputs: the input messages, the preferred and the non-preferred text."""
    pairs = []
    for record in iter_records(validation):
        preferred = record["preferred_output"][0].get("content")
        other = record["non_preferred_output"][0].get("content")
        if isinstance(preferred, str) and isinstance(other, str):
            case = EvalCase(id=pair_digest(pair_from_openai(record)), messages=record["input"]["messages"],
                            reference=preferred)
            pairs.append(HeldOutPair(case, other))
        if len(pairs) >= limit:
            break
    return pairs


def summarize_wins(candidate: str, pairs: list[HeldOutPair], figures: dict[str, dict[str, Any]],
                   wins: dict[str, list[float]]) -> dict[str, Any]:
    """The same shape as `evaluate.summarize`, with the win rate as the tracked figure."""
    result: dict[str, Any] = {"method": "dpo", "status": "evaluated" if pairs else NOT_EVALUATED,
                              "candidate": candidate, "examples": len(pairs),
                              "examples_sha256": examples_digest([p.case.id for p in pairs]),
                              "similarity": "token F1 against each output's full text", "models": {},
                              "differences": {}}
    if not pairs:
        result["reason"] = "no held-out preference pairs (validation.jsonl is empty)"
        return result
    for role, role_wins in wins.items():
        model = figures[role]
        model["ci95"]["win_rate"] = bootstrap_interval(role_wins)
        result["models"][role] = model
        if role != "candidate":
            deltas = [a - b for a, b in zip(wins["candidate"], role_wins, strict=True)]
            result["differences"][role] = {"win_rate": {"difference": round(sum(deltas) / len(deltas), 4),
                                                        "ci95": bootstrap_interval(deltas)}}
    return result


@task(name="evaluate-preferences", cache_policy=RUN_CACHE, retries=2, retry_delay_seconds=[5, 30],
      retry_condition_fn=retry_on_transient)
def evaluate_preferences(run_dir: str, candidate: str, current: str | None, settings: Settings,
                         resources: RunResources) -> dict[str, Any]:
    """Return each model's win rate (with its interval) and rates on held-out pairs; writes eval.json."""
    from prefect.artifacts import create_table_artifact

    pairs = held_out_pairs(Path(run_dir) / "validation.jsonl", settings.eval_max_examples)
    cases = [p.case for p in pairs]
    schema = json.loads(Path(settings.eval_json_schema).read_text("utf-8")) if settings.eval_json_schema else None
    runs = {"candidate": (candidate, None), "baseline": (base_model_of(candidate), settings.baseline_system_prompt)}
    if current and current != candidate:
        runs["current"] = (current, None)
    figures: dict[str, dict[str, Any]] = {}
    wins: dict[str, list[float]] = {}
    per_example: dict[str, list[dict[str, Any]]] = {}
    for role, (model, prompt) in (runs.items() if pairs else ()):
        chat = resources.chat_for(model)  # where the model lives: an incumbent on its own backend
        scores = evaluate_model(chat, model, cases, system_prompt=prompt,
                                language=settings.eval_language, schema=schema, concurrency=settings.eval_concurrency)
        wins[role] = [win(s.answer, p.case.reference, p.non_preferred) for s, p in zip(scores, pairs, strict=True)]
        figures[role] = {"model": model, **aggregate(scores), **win_rate(wins[role])}
        per_example[role] = [{**asdict(s), "win": w} for s, w in zip(scores, wins[role], strict=True)]
    result = {**summarize_wins(candidate, pairs, figures, wins), "language": settings.eval_language}
    Path(run_dir, "eval.json").write_text(json.dumps({**result, "per_example": per_example}, indent=2,
                                                     ensure_ascii=False), "utf-8")
    if pairs:
        create_table_artifact([{"role": role, "model": m["model"], "win_rate": m["win_rate"],
                                "win_rate_ci95": m["ci95"]["win_rate"], "json_valid_rate": m.get("json_valid_rate"),
                                "language_rate": m.get("language_rate")} for role, m in result["models"].items()],
                              key="ftflow-eval", description="Held-out preference pairs: win rate of each model")
    return result
