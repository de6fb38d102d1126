"""Win rate on held-out preference pairs, its bootstrap interval, and the promotion gate on it."""

from __future__ import annotations

from tasks.preference_eval import bootstrap_interval, win, win_rate
from tasks.promotion import decide

PREFERRED = '{"intent": "akku", "antwort": "Bitte bring den Akku in die Werkstatt."}'
OTHER = "Thank you for reaching out. Bitte bring den Akku in die Werkstatt."


def test_an_answer_in_the_preferred_style_wins_and_the_other_style_loses():
    assert win('{"intent": "akku", "antwort": "Bring ihn in die Werkstatt."}', PREFERRED, OTHER) == 1.0
    assert win("Thank you for reaching out. Bring ihn in die Werkstatt.", PREFERRED, OTHER) == 0.0
    assert win("nichts davon", PREFERRED, OTHER) == 0.5  # no overlap with either: a tie


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_more_pairs():
    few = [1.0, 0.0] * 5
    many = [1.0, 0.0] * 500
    low, high = bootstrap_interval(few)
    assert low < 0.5 < high
    wide, narrow = high - low, bootstrap_interval(many)[1] - bootstrap_interval(many)[0]
    assert narrow < wide / 3
    assert bootstrap_interval([1.0] * 20) == (1.0, 1.0)
    assert win_rate([1.0, 1.0, 0.0, 0.5]) | {"win_rate_ci95": None} == {"win_rate": 0.625, "win_rate_ci95": None,
                                                                          "pairs": 4}


def model(name: str, rate: float, f1: float = 0.5) -> dict:
    return {"model": name, "win_rate": rate, "f1": f1, "json_valid_rate": 1.0, "language_rate": 1.0}


def test_promotion_on_win_rate_needs_the_baseline_beaten_and_no_regression_against_the_incumbent():
    kwargs = {"min_improvement": 0.05, "max_regression": 0.02, "metric": "win_rate"}
    assert decide({"candidate": model("ft:new", 0.8, f1=0.1), "baseline": model("base", 0.5, f1=0.9)},
                  **kwargs).promoted  # F1 does not decide for preference data
    assert not decide({"candidate": model("ft:new", 0.52), "baseline": model("base", 0.5)}, **kwargs).promoted
    against_incumbent = decide({"candidate": model("ft:new", 0.8), "baseline": model("base", 0.5),
                                "current": model("ft:old", 0.9)}, **kwargs)
    assert not against_incumbent.promoted
    assert "win_rate 0.800 regresses against the promoted ft:old" in against_incumbent.reasons[0]
