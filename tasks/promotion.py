"""Promotion gate: a new model is promoted only if it clearly beats the baseline and does not regress.

- clearly beats the baseline: the whole paired bootstrap 95% interval of the F1 difference
  (candidate minus baseline, on the same held-out examples) lies at least `min_improvement`
  above zero, so a gain that sampling noise could explain does not promote;
- no tracked rate (valid JSON, schema, language) below the baseline's by more than
  `max_regression` (point estimates: a doubtful drop blocks rather than passes);
- no regression against the currently promoted model: no tracked figure (F1 and the rates)
  below it by more than `max_regression`.
Without held-out examples there is nothing to compare: "not evaluated", never promoted.
Not being promoted is an outcome, not an error: the run ends normally and says why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from prefect import task

from ftflow.caching import RUN_CACHE
from ftflow.settings import Settings
from tasks.evaluate import NOT_EVALUATED
from tasks.registry import Registry

RATES = ("json_valid_rate", "schema_valid_rate", "language_rate")


@dataclass
class Decision:
    promoted: bool
    reasons: list[str]
    model: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _dropped(candidate: dict[str, Any], other: dict[str, Any], metric: str, max_regression: float) -> bool:
    return candidate.get(metric) is not None and other.get(metric) is not None \
        and candidate[metric] < other[metric] - max_regression


def decide(evaluation: dict[str, Any], *, min_improvement: float, max_regression: float,
           metric: str = "f1") -> Decision:
    """Promote or not, with every reason against, from an evaluation (`evaluate.summarize` or the DPO one).

    `metric` is what must improve: token F1, or the win rate on preference pairs (method dpo).
    """
    if evaluation["status"] == NOT_EVALUATED:
        return Decision(promoted=False, reasons=[f"{NOT_EVALUATED}: {evaluation['reason']}"],
                        model=evaluation["candidate"])
    models = evaluation["models"]
    candidate, baseline, current = models["candidate"], models["baseline"], models.get("current")
    reasons = []
    gain = evaluation["differences"]["baseline"][metric]
    low, high = gain["ci95"]
    if low < min_improvement:
        label = "F1" if metric == "f1" else metric
        reasons.append(f"{label} {candidate[metric]:.3f} does not beat the baseline's {baseline[metric]:.3f} by "
                       f"{min_improvement:.3f} with 95% confidence (gain {gain['difference']:+.3f}, "
                       f"interval {low:+.3f} to {high:+.3f}, n={evaluation['examples']})")
    reasons += [f"{rate} {candidate[rate]:.3f} is below the baseline's {baseline[rate]:.3f}"
                for rate in RATES if _dropped(candidate, baseline, rate, max_regression)]
    if current:
        reasons += [f"{tracked} {candidate[tracked]:.3f} regresses against the promoted {current['model']} "
                    f"({current[tracked]:.3f}) by more than {max_regression:.3f}"
                    for tracked in (metric, *RATES) if _dropped(candidate, current, tracked, max_regression)]
    return Decision(promoted=not reasons, reasons=reasons, model=candidate["model"])


@task(name="current-model", cache_policy=RUN_CACHE)
def current_model(settings: Settings) -> str | None:
    """Return the currently promoted model of this base model, if any."""
    registry = Registry(settings.registry_url)
    # A new base model (a migration, e.g. to Together) is compared with whatever is promoted now.
    promoted = registry.current_promotion(settings.model) or registry.current_promotion()
    return promoted["model"] if promoted else None


@task(name="decide-promotion", cache_policy=RUN_CACHE)
def decide_promotion(evaluation: dict[str, Any], run_id: str, settings: Settings) -> Decision:
    """Return the promotion decision; a promotion is recorded in the registry."""
    decision = decide(evaluation, min_improvement=settings.promotion_min_improvement,
                      max_regression=settings.promotion_max_regression,
                      metric="win_rate" if evaluation.get("method") == "dpo" else "f1")
    registry = Registry(settings.registry_url)
    # A re-attached job's model may be the promoted one already: no second promotion row for it.
    already_promoted = (registry.current_promotion(settings.model) or {}).get("model") == decision.model
    if decision.promoted and not already_promoted:
        registry.promote(settings.model, decision.model, run_id, backend=settings.backend)
    return decision
