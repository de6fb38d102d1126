"""Win rate on held-out preference pairs, its paired interval, and the promotion gate on it."""

from __future__ import annotations

from tasks.evaluate import EvalCase
from tasks.preference_eval import HeldOutPair, summarize_wins, win, win_rate
from tasks.promotion import decide

PREFERRED = '{"intent": "akku", "antwort": "Bitte bring den Akku in die Werkstatt."}'
OTHER = "Thank you for reaching out. Bitte bring den Akku in die Werkstatt."


def test_an_answer_in_the_preferred_style_wins_and_the_other_style_loses():
    assert win('{"intent": "akku", "antwort": "Bring ihn in die Werkstatt."}', PREFERRED, OTHER) == 1.0
    assert win("Thank you for reaching out. Bring ihn in die Werkstatt.", PREFERRED, OTHER) == 0.0
    assert win("nichts davon", PREFERRED, OTHER) == 0.5  # no overlap with either: a tie


def test_win_rate_is_the_mean_of_wins():
    assert win_rate([1.0, 1.0, 0.0, 0.5]) == {"win_rate": 0.625, "pairs": 4}
    assert win_rate([]) == {"win_rate": None, "pairs": 0}


def figures(name: str, rate: float, f1: float = 0.5) -> dict:
    return {"model": name, "win_rate": rate, "f1": f1, "json_valid_rate": 1.0, "language_rate": 1.0, "ci95": {}}


def evaluation(wins: dict[str, list[float]], f1: dict[str, float] | None = None) -> dict:
    pairs = [HeldOutPair(EvalCase(id=f"p{i}", messages=[], reference=PREFERRED), OTHER)
             for i in range(len(wins["candidate"]))]
    models = {role: figures(f"ft:{role}" if role != "baseline" else "base", sum(w) / len(w), (f1 or {}).get(role, 0.5))
              for role, w in wins.items()}
    return summarize_wins("ft:candidate", pairs, models, wins)


def test_the_evaluation_has_paired_differences_with_an_interval():
    result = evaluation({"candidate": [1.0] * 15 + [0.0] * 5, "baseline": [0.0] * 15 + [1.0] * 5})
    assert result["method"] == "dpo" and result["examples"] == 20
    gain = result["differences"]["baseline"]["win_rate"]
    assert gain["difference"] == 0.5
    low, high = gain["ci95"]
    assert 0 < low < 0.5 < high
    assert result["models"]["candidate"]["ci95"]["win_rate"][0] < 0.75 < result["models"]["candidate"]["ci95"][
        "win_rate"][1]


def test_promotion_on_win_rate_needs_the_gain_to_clear_its_interval_and_no_regression_against_the_incumbent():
    kwargs = {"min_improvement": 0.0, "max_regression": 0.02, "metric": "win_rate"}
    clear = evaluation({"candidate": [1.0] * 20, "baseline": [0.0] * 20}, f1={"candidate": 0.1, "baseline": 0.9})
    assert decide(clear, **kwargs).promoted  # F1 does not decide for preference data
    noisy = evaluation({"candidate": [1.0, 0.0] * 5, "baseline": [0.0, 1.0, 1.0, 0.0] * 2 + [0.0, 1.0]})
    refused = decide(noisy, **kwargs)
    assert not refused.promoted and "with 95% confidence" in refused.reasons[0]
    against_incumbent = decide(evaluation({"candidate": [1.0] * 16 + [0.0] * 4, "baseline": [0.0] * 20,
                                           "current": [1.0] * 20}), **kwargs)
    assert not against_incumbent.promoted
    assert "win_rate 0.800 regresses against the promoted ft:current" in against_incumbent.reasons[0]
