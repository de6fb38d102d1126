from __future__ import annotations

import pytest

from tasks.economics import compute_cost_case, cost_case
from tasks.lineage import reconcile_tokens
from tasks.promotion import decide


def metrics(model="ft:m", f1=0.8, json_rate=1.0, language=1.0, schema=1.0):
    return {"model": model, "f1": f1, "json_valid_rate": json_rate, "language_rate": language,
            "schema_valid_rate": schema}


def evaluation(candidate, baseline, gain_interval, current=None, examples=40):
    models = {"candidate": candidate, "baseline": baseline, **({"current": current} if current else {})}
    gain = round(candidate["f1"] - baseline["f1"], 4)
    return {"status": "evaluated", "candidate": candidate["model"], "examples": examples, "models": models,
            "differences": {"baseline": {"f1": {"difference": gain, "ci95": list(gain_interval)}}}}


def decide_default(result):
    return decide(result, min_improvement=0.05, max_regression=0.02)


def test_a_clearly_better_model_is_promoted():
    decision = decide_default(evaluation(metrics(), metrics("base", f1=0.2, json_rate=0.0), (0.5, 0.7)))
    assert decision.promoted and decision.reasons == []


def test_a_gain_whose_interval_does_not_clear_the_margin_is_not_promoted():
    # The point estimate (0.10) beats the margin, but the interval reaches down to 0.01: noise could explain it.
    decision = decide_default(evaluation(metrics(f1=0.3), metrics("base", f1=0.2), (0.01, 0.19), examples=12))
    assert not decision.promoted
    assert decision.reasons == ["F1 0.300 does not beat the baseline's 0.200 by 0.050 with 95% confidence "
                                "(gain +0.100, interval +0.010 to +0.190, n=12)"]


def test_not_beating_the_baseline_by_the_margin():
    decision = decide_default(evaluation(metrics(f1=0.24), metrics("base", f1=0.2), (0.02, 0.06)))
    assert not decision.promoted and "does not beat the baseline" in decision.reasons[0]


def test_a_worse_rate_than_the_baseline_blocks_promotion():
    decision = decide_default(evaluation(metrics(language=0.5), metrics("base", f1=0.1, language=0.9), (0.6, 0.8)))
    assert not decision.promoted and decision.reasons == ["language_rate 0.500 is below the baseline's 0.900"]


def test_regression_against_the_promoted_model_within_and_beyond_the_margin():
    result = evaluation(metrics(f1=0.79), metrics("base", f1=0.1), (0.6, 0.75), current=metrics("ft:old", f1=0.8))
    assert decide_default(result).promoted
    result["models"]["current"] = metrics("ft:old", f1=0.9)
    decision = decide_default(result)
    assert not decision.promoted and "regresses against the promoted ft:old" in decision.reasons[0]



def test_fact_recall_below_the_baseline_or_the_incumbent_blocks_promotion():
    """The issue's reproduction: equal F1, wrong order numbers; F1 alone promoted it."""
    result = evaluation({**metrics(f1=0.96), "fact_recall": 0.3}, {**metrics("base", f1=0.1), "fact_recall": 0.9},
                        (0.8, 0.9), current={**metrics("ft:old", f1=0.96), "fact_recall": 0.95})
    decision = decide_default(result)
    assert not decision.promoted
    assert decision.reasons == ["fact_recall 0.300 is below the baseline's 0.900",
                                "fact_recall 0.300 regresses against the promoted ft:old (0.950) by more than 0.020"]


def test_every_criterion_is_listed_with_value_threshold_and_verdict():
    result = evaluation({**metrics(f1=0.96), "fact_recall": 1.0}, {**metrics("base", f1=0.1), "fact_recall": 0.5},
                        (0.8, 0.9), current={**metrics("ft:old", f1=0.96), "fact_recall": 1.0})
    decision = decide_default(result)
    assert decision.promoted
    rows = {c["criterion"]: (c["value"], c["threshold"], c["verdict"]) for c in decision.criteria}
    assert rows["F1 gain over the baseline, low end of its 95% interval"] == (0.8, 0.05, "pass")
    assert rows["fact_recall against the baseline"] == (1.0, 0.48, "pass")
    assert rows["f1 against the incumbent"] == (0.96, 0.94, "pass")
    assert rows["language_rate against the incumbent"] == (1.0, 0.98, "pass")
    assert len(rows) == 1 + 4 + 5  # the gain; facts and 3 rates vs baseline; F1, facts and 3 rates vs incumbent

def test_zero_validation_examples_are_not_evaluated_and_not_promoted():
    # Issue 11: with 0 examples the gate said "F1 0.000 does not beat 0.000".
    result = {"status": "not evaluated", "candidate": "ft:m", "examples": 0, "models": {}, "differences": {},
              "reason": "no held-out validation examples (validation.jsonl is empty)"}
    decision = decide_default(result)
    assert not decision.promoted
    assert decision.reasons == ["not evaluated: no held-out validation examples (validation.jsonl is empty)"]
    assert compute_cost_case.fn(result, 1000, "gpt-4o-mini", 100) is None


def test_cost_case_from_measured_figures():
    # gpt-4o-mini: base 0.15/0.60, fine-tuned 0.30/1.20, training 3.00 per 1M tokens.
    case = cost_case(model="gpt-4o-mini", prompt_tokens_before=1000, completion_tokens_before=100,
                     prompt_tokens_after=100, completion_tokens_after=100, trained_tokens=1_000_000,
                     monthly_requests=10_000)
    before = (1000 * 0.15 + 100 * 0.60) / 1e6
    after = (100 * 0.30 + 100 * 1.20) / 1e6
    assert case.cost_per_1k_requests_before_usd == pytest.approx(before * 1000)
    assert case.cost_per_1k_requests_after_usd == pytest.approx(after * 1000)
    assert case.prompt_token_reduction == 0.9 and case.training_cost_usd == 3.0
    assert case.monthly_saving_usd == pytest.approx((before - after) * 10_000)
    assert case.break_even_requests == 50_000  # 3.00 / 0.00006 per request
    assert case.payback_months == pytest.approx(5.0)



def test_cost_case_against_the_incumbent_too():
    """The issue's reproduction: a gpt-4.1-nano candidate is cheaper than the gpt-4o-mini incumbent."""
    # gpt-4.1-nano fine-tuned 0.20/0.80; gpt-4o-mini fine-tuned 0.30/1.20 per 1M tokens.
    case = cost_case(model="gpt-4.1-nano", prompt_tokens_before=200, completion_tokens_before=100,
                     prompt_tokens_after=50, completion_tokens_after=100, trained_tokens=0, monthly_requests=100_000,
                     incumbent=("ft:gpt-4o-mini-2024-07-18:ftflow::old", 50, 100))
    after, incumbent = (50 * 0.20 + 100 * 0.80) / 1e6, (50 * 0.30 + 100 * 1.20) / 1e6
    assert case.incumbent_model == "ft:gpt-4o-mini-2024-07-18:ftflow::old"
    assert case.cost_per_1k_requests_incumbent_usd == pytest.approx(incumbent * 1000)
    assert case.monthly_saving_vs_incumbent_usd == pytest.approx((incumbent - after) * 100_000)
    assert case.monthly_saving_vs_incumbent_usd > 0

def test_cost_case_when_the_fine_tuned_model_costs_more():
    case = cost_case(model="gpt-4o-mini", prompt_tokens_before=100, completion_tokens_before=100,
                     prompt_tokens_after=90, completion_tokens_after=100, trained_tokens=10_000, monthly_requests=1000)
    assert case.monthly_saving_usd < 0 and case.break_even_requests is None and case.payback_months is None


def test_token_reconciliation_flags_large_differences():
    assert reconcile_tokens(1000, 1000, 0.05) == {"estimated": 1000, "actual": 1000, "difference_share": 0.0,
                                                  "flagged": False}
    assert reconcile_tokens(1000, 1200, 0.05)["flagged"] is True
    assert reconcile_tokens(1000, None, 0.05)["flagged"] is True
