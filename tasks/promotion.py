"""Promotion gate: a new model is promoted only if it beats the baseline and does not regress.

- beats the baseline: token F1 at least `min_improvement` above the baseline's, and no
  tracked rate (valid JSON, schema, language) below the baseline's by more than `max_regression`;
- no regression against the currently promoted model: no tracked metric (F1 and the rates)
  below it by more than `max_regression`.
Not being promoted is an outcome, not an error: the run ends normally and says why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from prefect import task

from ftflow.caching import RUN_CACHE
from ftflow.settings import Settings
from tasks.registry import Registry

RATES = ("json_valid_rate", "schema_valid_rate", "language_rate")


@dataclass
class Decision:
    promoted: bool
    reasons: list[str]
    model: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(models: dict[str, dict[str, Any]], *, min_improvement: float, max_regression: float,
           metric: str = "f1") -> Decision:
    """`metric` is what must improve: token F1, or the win rate on preference pairs (method dpo)."""
    candidate, baseline, current = models["candidate"], models["baseline"], models.get("current")
    reasons = []
    if candidate[metric] < baseline[metric] + min_improvement:
        reasons.append(f"{metric} {candidate[metric]:.3f} does not beat the baseline's {baseline[metric]:.3f} "
                       f"by {min_improvement:.3f}")
    for rate in RATES:
        if candidate.get(rate) is not None and baseline.get(rate) is not None \
                and candidate[rate] < baseline[rate] - max_regression:
            reasons.append(f"{rate} {candidate[rate]:.3f} is below the baseline's {baseline[rate]:.3f}")
    if current:
        for tracked in (metric, *RATES):
            if candidate.get(tracked) is not None and current.get(tracked) is not None \
                    and candidate[tracked] < current[tracked] - max_regression:
                reasons.append(f"{tracked} {candidate[tracked]:.3f} regresses against the promoted "
                               f"{current['model']} ({current[tracked]:.3f}) by more than {max_regression:.3f}")
    return Decision(promoted=not reasons, reasons=reasons, model=candidate["model"])


@task(name="current-model", cache_policy=RUN_CACHE)
def current_model(settings: Settings) -> str | None:
    """Return the currently promoted model of this base model, if any."""
    promoted = Registry(settings.registry_url).current_promotion(settings.model)
    return promoted["model"] if promoted else None


@task(name="decide-promotion", cache_policy=RUN_CACHE)
def decide_promotion(evaluation: dict[str, Any], run_id: str, settings: Settings) -> Decision:
    """Return the promotion decision; a promotion is recorded in the registry."""
    decision = decide(evaluation["models"], min_improvement=settings.promotion_min_improvement,
                      max_regression=settings.promotion_max_regression,
                      metric="win_rate" if evaluation.get("method") == "dpo" else "f1")
    if decision.promoted:
        Registry(settings.registry_url).promote(settings.model, decision.model, run_id)
    return decision
