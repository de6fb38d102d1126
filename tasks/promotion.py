"""Promotion gate: a new model is promoted only if it clearly beats the baseline and does not regress.

- clearly beats the baseline: the whole paired bootstrap 95% interval of the F1 difference
  (candidate minus baseline, on the same held-out examples) lies at least `min_improvement`
  above zero, so a gain that sampling noise could explain does not promote;
- no tracked rate (valid JSON, schema, language) below the baseline's by more than
  `max_regression` (point estimates: a doubtful drop blocks rather than passes);
- fact recall (the share of the reference's grounded facts the answer states, see
  `tasks/facts.py`) not below the baseline's by more than `max_regression`;
- no regression against the currently promoted model: no tracked figure (F1, fact recall and
  the rates) below it by more than `max_regression`.
Every criterion is kept with its value, threshold and verdict (`Decision.criteria`), and the
incumbent it was compared with (model, base model, backend), so the summary can explain it.
Without held-out examples there is nothing to compare: "not evaluated", never promoted.
Not being promoted is an outcome, not an error: the run ends normally and says why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from prefect import task

from ftflow.caching import RUN_CACHE
from ftflow.run_resources import RunResources
from ftflow.settings import Settings
from tasks.evaluate import NOT_EVALUATED

RATES = ("json_valid_rate", "schema_valid_rate", "language_rate")
# Must not fall below the baseline's (less `max_regression`) nor regress against the incumbent:
# an answer with the wrong order number is worse than none, however well it reads.
FACTS = ("fact_recall",)


@dataclass
class Decision:
    promoted: bool
    reasons: list[str]
    model: str
    # Each criterion of the gate: what, the candidate's value, the threshold, pass or fail.
    criteria: list[dict[str, Any]] = field(default_factory=list)
    incumbent: dict[str, Any] | None = None  # the promoted model compared against: model, base model, backend

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _criterion(name: str, value: float, threshold: float, reason: str) -> dict[str, Any]:
    """One line of the gate: passes when `value` >= `threshold`; `reason` says why when it does not."""
    threshold = max(threshold, 0.0)  # shares and scores: "at least -0.02" reads as a glitch and means 0
    passed = value >= threshold
    return {"criterion": name, "value": round(value, 4), "threshold": round(threshold, 4),
            "verdict": "pass" if passed else "fail", **({} if passed else {"reason": reason})}


def decide(evaluation: dict[str, Any], *, min_improvement: float, max_regression: float,
           metric: str = "f1") -> Decision:
    """Promote or not, with every criterion and every reason against (`evaluate.summarize` or the DPO one).

    `metric` is what must improve: token F1, or the win rate on preference pairs (method dpo).
    """
    if evaluation["status"] == NOT_EVALUATED:
        return Decision(promoted=False, reasons=[f"{NOT_EVALUATED}: {evaluation['reason']}"],
                        model=evaluation["candidate"])
    models = evaluation["models"]
    candidate, baseline, current = models["candidate"], models["baseline"], models.get("current")
    gain = evaluation["differences"]["baseline"][metric]
    low, high = gain["ci95"]
    label = "F1" if metric == "f1" else metric
    criteria = [_criterion(
        f"{label} gain over the baseline, low end of its 95% interval", low, min_improvement,
        f"{label} {candidate[metric]:.3f} does not beat the baseline's {baseline[metric]:.3f} by "
        f"{min_improvement:.3f} with 95% confidence (gain {gain['difference']:+.3f}, "
        f"interval {low:+.3f} to {high:+.3f}, n={evaluation['examples']})")]
    criteria += [_criterion(f"{rate} against the baseline", candidate[rate], baseline[rate] - max_regression,
                            f"{rate} {candidate[rate]:.3f} is below the baseline's {baseline[rate]:.3f}")
                 for rate in (*FACTS, *RATES) if _both(candidate, baseline, rate)]
    if current:
        criteria += [_criterion(f"{tracked} against the incumbent", candidate[tracked],
                                current[tracked] - max_regression,
                                f"{tracked} {candidate[tracked]:.3f} regresses against the promoted "
                                f"{current['model']} ({current[tracked]:.3f}) by more than {max_regression:.3f}")
                     for tracked in (metric, *FACTS, *RATES) if _both(candidate, current, tracked)]
    reasons = [c.pop("reason") for c in criteria if "reason" in c]
    return Decision(promoted=not reasons, reasons=reasons, model=candidate["model"], criteria=criteria)


def _both(candidate: dict[str, Any], other: dict[str, Any], metric: str) -> bool:
    return candidate.get(metric) is not None and other.get(metric) is not None


@task(name="current-model", cache_policy=RUN_CACHE)
def current_model(settings: Settings, resources: RunResources) -> str | None:
    """Return the currently promoted model of this base model, if any."""
    lineage = resources.lineage
    # A new base model (a migration, e.g. to Together) is compared with whatever is promoted now.
    promoted = lineage.current_promotion(settings.model) or lineage.current_promotion()
    return promoted["model"] if promoted else None


@task(name="decide-promotion", cache_policy=RUN_CACHE)
def decide_promotion(evaluation: dict[str, Any], run_id: str, settings: Settings,
                     resources: RunResources) -> Decision:
    """Return the promotion decision; a promotion is recorded in the lineage store."""
    decision = decide(evaluation, min_improvement=settings.promotion_min_improvement,
                      max_regression=settings.promotion_max_regression,
                      metric="win_rate" if evaluation.get("method") == "dpo" else "f1")
    lineage = resources.lineage
    incumbent = lineage.current_promotion(settings.model) or lineage.current_promotion()  # as current_model
    if incumbent:
        decision.incumbent = {"model": incumbent["model"], "base_model": incumbent["base_model"],
                              "backend": incumbent["backend"]}
    # A re-attached job's model may be the promoted one already: no second promotion row for it.
    already_promoted = (lineage.current_promotion(settings.model) or {}).get("model") == decision.model
    if decision.promoted and not already_promoted:
        lineage.promote(settings.model, decision.model, run_id, backend=settings.backend,
                        deployment=resources.ledger.newest_deployment(decision.model))
    return decision
