"""An optional LLM judge: the provider's own chat model grades each fine-tuned answer by a rubric.

Off by default (`eval_judge`). When on, after the automatic metrics:
- the judge model (`eval_judge_model`, default: the candidate's base model, asked on the same
  backend) reads the conversation, the reference and the answer, and answers
  `{"score": 1-5, "reason": ...}` by `RUBRIC`; a score of 4 or 5 passes;
- its cost is estimated first (tiktoken, offline, at the model's base prices) and it runs only
  if that fits in what the budget (`max_cost_usd`) leaves after the run's training estimate
  (`report.json`); otherwise it says so and asks nothing;
- each verdict is cached on disk under the sha256 of everything that decides it (judge model,
  rubric, conversation, reference, answer), so a re-run asks only about new answers;
- it reports its pass rate and its agreement with the automatic metrics on the same examples
  (automatic pass: every grounded fact stated and word F1 >= 0.5), both with 95% intervals.
A reply that is not such JSON is counted as `unparseable`, never guessed.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ftflow.catalog import load_catalog
from ftflow.encodings import encoding_name_for_model, get_encoding
from ftflow.providers.base import ChatModel
from tasks.intervals import bootstrap_interval

RUBRIC = """You grade a customer-support answer against a reference answer.
Score from 1 to 5:
5 - every fact (order numbers, names, products, places, numbers, dates) matches the reference and
    the conversation, and the answer does what the reference does;
4 - the facts match; wording or detail differs;
3 - the intent is right but a fact is missing;
2 - the intent is right but a fact is wrong or invented;
1 - wrong intent, or unusable.
Reply only with JSON: {"score": <1-5>, "reason": "<one sentence>"}"""
RUBRIC_VERSION = hashlib.sha256(RUBRIC.encode()).hexdigest()[:12]
PASS_SCORE = 4
REPLY_TOKENS = 60  # the estimate's completion tokens per verdict (a score and one sentence)
F1_PASS = 0.5


def judge_messages(conversation: list[dict[str, Any]], reference: str, answer: str) -> list[dict[str, str]]:
    turns = "\n".join(f"{m['role']}: {m['content']}" for m in conversation
                      if m["role"] != "system" and isinstance(m.get("content"), str))
    return [{"role": "system", "content": RUBRIC},
            {"role": "user", "content": f"Conversation:\n{turns}\n\nReference answer:\n{reference}\n\n"
                                        f"Answer to grade:\n{answer}"}]


def verdict_key(model: str, messages: list[dict[str, str]]) -> str:
    """sha256 of what decides a verdict: the judge model, the rubric and the graded content."""
    return hashlib.sha256(json.dumps([model, RUBRIC_VERSION, messages], ensure_ascii=False).encode()).hexdigest()


def parse_verdict(text: str) -> dict[str, Any] | None:
    try:
        reply = json.loads(text)
    except (ValueError, TypeError):
        return None
    score = reply.get("score") if isinstance(reply, dict) else None
    if not isinstance(score, int) or isinstance(score, bool) or not 1 <= score <= 5:
        return None
    return {"score": score, "pass": score >= PASS_SCORE, "reason": str(reply.get("reason", ""))}


def estimated_cost_usd(model: str, requests: list[list[dict[str, str]]]) -> float:
    """What asking these requests costs at the model's base prices: prompt tokens counted, replies estimated."""
    info = load_catalog().get(model)
    encoding = get_encoding(encoding_name_for_model(model))
    prompt = sum(len(encoding.encode(m["content"], disallowed_special=())) + 4 for r in requests for m in r)
    return (prompt * info.base_input + REPLY_TOKENS * len(requests) * info.base_output) / 1e6


def automatic_pass(scored: Any) -> bool:
    """What the automatic metrics say of an answer: every grounded fact stated, and word F1 >= 0.5."""
    return (scored.fact_recall is None or scored.fact_recall == 1.0) and scored.f1 >= F1_PASS


def judge_answers(chat: ChatModel, model: str, cases: list[Any], scores: list[Any], *,
                  cache_dir: Path, budget_usd: float | None, concurrency: int) -> dict[str, Any]:
    """Grade each answer (cached by content); the judge's pass rate, agreement, cost, and each verdict."""
    requests = [judge_messages(c.messages, c.reference, s.answer) for c, s in zip(cases, scores, strict=True)]
    keys = [verdict_key(model, r) for r in requests]
    cache_dir.mkdir(parents=True, exist_ok=True)
    cached = {k: json.loads((cache_dir / f"{k}.json").read_text("utf-8")) for k in keys
              if (cache_dir / f"{k}.json").is_file()}
    to_ask = [i for i, k in enumerate(keys) if k not in cached]
    estimate = round(estimated_cost_usd(model, [requests[i] for i in to_ask]), 6)
    result: dict[str, Any] = {"model": model, "rubric": RUBRIC_VERSION, "examples": len(cases),
                              "cached": len(keys) - len(to_ask), "estimated_cost_usd": estimate}
    if budget_usd is not None and estimate > budget_usd:
        return {**result, "status": "not run",
                "reason": f"its estimated cost ${estimate:.4f} exceeds the ${max(budget_usd, 0):.4f} "
                          "the budget leaves after training"}
    price_in, price_out = load_catalog().get(model).base_input, load_catalog().get(model).base_output

    def ask(i: int) -> dict[str, Any]:
        reply = chat.ask(requests[i])
        verdict = parse_verdict(reply.text) or {"score": None, "pass": None, "reason": "unparseable"}
        verdict["cost_usd"] = (reply.prompt_tokens * price_in + reply.completion_tokens * price_out) / 1e6
        if verdict["score"] is not None:  # an unparseable reply is asked again next time
            (cache_dir / f"{keys[i]}.json").write_text(json.dumps(verdict, ensure_ascii=False), "utf-8")
        return verdict

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        asked = dict(zip(to_ask, pool.map(ask, to_ask), strict=True))
    verdicts = [asked.get(i) or {**cached[k], "cost_usd": 0.0} for i, k in enumerate(keys)]
    graded = [(v, s) for v, s in zip(verdicts, scores, strict=True) if v["score"] is not None]
    passes = [float(v["pass"]) for v, _ in graded]
    agreement = [float(v["pass"] == automatic_pass(s)) for v, s in graded]
    return {**result, "status": "judged", "unparseable": len(verdicts) - len(graded),
            "pass_rate": round(sum(passes) / len(passes), 4) if passes else None,
            "agreement_with_automatic": round(sum(agreement) / len(agreement), 4) if agreement else None,
            "ci95": {"pass_rate": bootstrap_interval(passes),
                     "agreement_with_automatic": bootstrap_interval(agreement)},
            "cost_usd": round(sum(v["cost_usd"] for v in verdicts), 6),
            "per_example": [{"index": s.index, **{k: v[k] for k in ("score", "pass", "reason")},
                             "automatic_pass": automatic_pass(s)} for v, s in zip(verdicts, scores, strict=True)]}
