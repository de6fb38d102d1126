"""The optional LLM judge: rubric verdicts, cached by content, within the budget, agreement with the metrics."""

from __future__ import annotations

import json

from ftflow.providers.base import ChatReply
from tasks.evaluate import EvalCase, score
from tasks.judge import judge_answers, parse_verdict
from tasks.summary import judge_line

USAGE = ChatReply("", prompt_tokens=300, completion_tokens=20)


class FakeJudge:
    """A chat model that passes an answer when the reference's order number is in it (as a good judge would)."""

    name = "gpt-4o-mini"

    def __init__(self) -> None:
        self.asked = 0

    def ask(self, messages, *, temperature=0.0):
        self.asked += 1
        content = messages[1]["content"]
        reference = content.split("Reference answer:\n")[1].split("\n\n")[0]
        answer = content.split("Answer to grade:\n")[1]
        order = reference.split()[-1]
        text = "no JSON here" if "kaputt" in answer else json.dumps(
            {"score": 5 if order in answer else 2, "reason": "order number"})
        return ChatReply(text, prompt_tokens=300, completion_tokens=20)


def cases_and_scores(answers: list[str]):
    cases = [EvalCase(id=str(i), messages=[{"role": "user", "content": f"Wo ist AR-{i}?"}],
                      reference=f"Deine Bestellung AR-{i}") for i in range(len(answers))]
    scores = [score(i, a, c.reference, usage=USAGE, language="de", schema=None, price_in=0.15, price_out=0.6,
                    inputs=c.messages[0]["content"]) for i, (a, c) in enumerate(zip(answers, cases, strict=True))]
    return cases, scores


def test_the_judge_grades_caches_by_content_and_reports_agreement(tmp_path):
    cases, scores = cases_and_scores(["Deine Bestellung AR-0", "Deine Bestellung AR-7", "kaputt", "Deine Bestellung AR-3"])
    judge = FakeJudge()
    first = judge_answers(judge, "gpt-4o-mini", cases, scores, cache_dir=tmp_path, budget_usd=1.0,
                          concurrency=2)
    assert first["status"] == "judged" and judge.asked == 4 and first["unparseable"] == 1
    assert [e["pass"] for e in first["per_example"]] == [True, False, None, True]
    assert first["pass_rate"] == round(2 / 3, 4) and first["agreement_with_automatic"] == 1.0
    assert first["cost_usd"] == round(4 * (300 * 0.15 + 20 * 0.6) / 1e6, 6)  # 4 asked at gpt-4o-mini's prices
    again = judge_answers(judge, "gpt-4o-mini", cases, scores, cache_dir=tmp_path, budget_usd=1.0,
                          concurrency=2)
    assert judge.asked == 5 and again["cached"] == 3  # only the unparseable one is asked again
    assert "agrees with the automatic metrics on 100% [100%, 100%]" in judge_line(again)


def test_the_judge_runs_only_within_the_budget(tmp_path):
    cases, scores = cases_and_scores(["Deine Bestellung AR-0"] * 3)
    judge = FakeJudge()
    refused = judge_answers(judge, "gpt-4o-mini", cases, scores, cache_dir=tmp_path, budget_usd=0.0,
                            concurrency=1)
    assert refused["status"] == "not run" and judge.asked == 0 and refused["estimated_cost_usd"] > 0
    assert judge_line(refused).endswith("not run, its estimated cost $"
                                        f"{refused['estimated_cost_usd']:.4f} exceeds the $0.0000 the budget leaves "
                                        "after training.")


def test_only_a_score_from_1_to_5_is_a_verdict():
    assert parse_verdict('{"score": 4, "reason": "ok"}') == {"score": 4, "pass": True, "reason": "ok"}
    for reply in ('{"score": 6}', '{"score": true}', '{"score": "5"}', "5", "[]"):
        assert parse_verdict(reply) is None, reply


def test_the_judge_is_asked_on_the_base_models_backend_with_what_training_leaves_of_the_budget(tmp_path):
    from types import SimpleNamespace

    import tasks.evaluate
    from ftflow.settings import get_settings

    judge, asked_for = FakeJudge(), []
    resources = SimpleNamespace(chat_for=lambda model: (asked_for.append(model), judge)[1])
    (tmp_path / "report.json").write_text(json.dumps({"estimated_cost_usd": 0.5}))
    cases, scores = cases_and_scores(["Deine Bestellung AR-0"])
    settings = get_settings(max_cost_usd=0.5, work_dir=str(tmp_path / "work"))
    refused = tasks.evaluate.judge_candidate(tmp_path, "ft:gpt-4o-mini-2024-07-18:o::x", cases, scores, settings,
                                             resources)
    assert asked_for == ["gpt-4o-mini-2024-07-18"] and refused["status"] == "not run"
    settings = get_settings(max_cost_usd=1.0, work_dir=str(tmp_path / "work"))
    judged = tasks.evaluate.judge_candidate(tmp_path, "ft:gpt-4o-mini-2024-07-18:o::x", cases, scores, settings,
                                            resources)
    assert judged["status"] == "judged" and judged["pass_rate"] == 1.0 and list((tmp_path / "work" / "judge").iterdir())
