"""Evaluate: the fine-tuned model against its baseline on the held-out validation split.

The candidate is the fine-tuned model with the short prompt it was trained with (the
validation examples as prepared); the baseline is the base model with the full production
prompt (`baseline_system_prompt`); the currently promoted model, if any, answers the same
examples. Per example and aggregated:
- format: valid JSON rate, and JSON-schema validity when a schema is configured;
- language: share of answers in the target language (langdetect, offline profiles);
- similarity to the reference answer: word F1 (SQuAD-style, multiset overlap). A JSON
  reference is compared field by field on the values only (keys never count), and the F1 is
  the mean over the fields of either answer; plain text is compared as a whole;
- exact match per JSON field of the reference;
- facts (`tasks/facts.py`): fact recall, the share of the reference's grounded facts (ids,
  numbers, amounts, dates, names that also appear in the input turns) the answer states, and
  the share of answers that invent a fact (one in neither the input nor the reference). Word
  F1 scores an answer with the wrong order number, name and city nearly as high as the right
  one; fact recall does not;
- prompt and completion tokens actually used (the API's `usage`), and what they cost.
Every rate and mean carries a seeded bootstrap 95% interval, and the candidate's difference
to each other model a paired one (same examples, resampled together), which the promotion
gate reads. No held-out example: "not evaluated", and nothing is asked of any model.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import unicodedata
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
from prefect import task

from ftflow.caching import RUN_CACHE
from ftflow.catalog import base_model_of, load_catalog
from ftflow.jsonl import iter_records
from ftflow.providers.base import ChatModel, retry_on_transient
from ftflow.run_resources import RunResources
from ftflow.settings import Settings
from tasks.facts import score_facts
from tasks.intervals import bootstrap_interval
from tasks.judge import judge_answers
from tasks.transform import content_hash

WORD = re.compile(r"\w+", re.UNICODE)
_langdetect_lock = threading.Lock()
NOT_EVALUATED = "not evaluated"


# --- metric functions (pure) ------------------------------------------------------------------


def words(text: str) -> list[str]:
    """SQuAD's normalisation (without English articles): case-folded, punctuation removed, split on spaces.

    Removing rather than splitting at punctuation keeps an id whole: `AR-20417` is one word,
    so a wrong order number shares nothing with the right one.
    """
    return "".join(c for c in text.casefold() if not unicodedata.category(c).startswith("P")).split()


def token_f1(answer: str, reference: str) -> float:
    """Token-overlap F1 between an answer and the reference (normalised words, as multisets).

    Two texts without words (e.g. two empty values) match only when they are equal.
    """
    a, r = Counter(words(answer)), Counter(words(reference))
    if not a or not r:
        return float(not a and not r and answer.strip() == reference.strip())
    overlap = sum((a & r).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / sum(a.values()), overlap / sum(r.values())
    return 2 * precision * recall / (precision + recall)


def parse_json(text: str) -> Any | None:
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return None


def json_fields(value: Any, path: str = "") -> dict[str, Any]:
    """The leaf values of a JSON document by path (`kunde.name`, `artikel[0]`); keys are only paths."""
    if isinstance(value, dict):
        fields: dict[str, Any] = {}
        for key, item in value.items():
            fields.update(json_fields(item, f"{path}.{key}" if path else str(key)))
        return fields
    if isinstance(value, list):
        fields = {}
        for i, item in enumerate(value):
            fields.update(json_fields(item, f"{path}[{i}]"))
        return fields
    return {path: value}


def _value_text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else json.dumps(value, ensure_ascii=False)


def _same_value(answer: Any, reference: Any) -> bool:
    if isinstance(answer, str) and isinstance(reference, str):
        return " ".join(answer.split()) == " ".join(reference.split())
    return answer == reference and type(answer) is type(reference)


def reference_fields(reference: str) -> dict[str, Any] | None:
    """The fields of a JSON-object or -array reference; None for a plain-text reference."""
    parsed = parse_json(reference)
    return json_fields(parsed) if isinstance(parsed, dict | list) and parsed else None


def answer_f1(answer: str, reference: str) -> float:
    """Word F1 of an answer: per JSON field on the values (mean over both answers' fields), else on the text.

    An answer that is not JSON where the reference is gets 0: no field can be read from it.
    """
    wanted = reference_fields(reference)
    if wanted is None:
        return token_f1(answer, reference)
    parsed = parse_json(answer)
    given = json_fields(parsed) if isinstance(parsed, dict | list) else {}
    paths = wanted.keys() | given.keys()
    return sum(token_f1(_value_text(given.get(p)), _value_text(wanted.get(p))) if p in given and p in wanted
               else 0.0 for p in paths) / len(paths)


def field_matches(answer: str, reference: str) -> dict[str, bool]:
    """For each field of a JSON reference: does the answer hold exactly that value there?"""
    wanted = reference_fields(reference) or {}
    parsed = parse_json(answer)
    given = json_fields(parsed) if isinstance(parsed, dict | list) else {}
    return {p: p in given and _same_value(given[p], v) for p, v in wanted.items()}


def prose_of(text: str) -> str:
    """The natural-language part of an answer: the string values of a JSON answer, else the text."""
    parsed = parse_json(text)
    if isinstance(parsed, dict | list):
        strings: list[str] = []

        def walk(value: Any) -> None:
            if isinstance(value, str):
                strings.append(value)
            elif isinstance(value, dict):
                for v in value.values():
                    walk(v)
            elif isinstance(value, list):
                for v in value:
                    walk(v)

        walk(parsed)
        return " ".join(strings)
    return text


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of the text's language, deterministic; None when there is no text."""
    from langdetect import DetectorFactory, LangDetectException, detect

    with _langdetect_lock:
        DetectorFactory.seed = 0
        try:
            return detect(text) if WORD.search(text) else None
        except LangDetectException:
            return None


def schema_valid(text: str, schema: dict[str, Any] | None) -> bool | None:
    if schema is None:
        return None
    parsed = parse_json(text)
    if parsed is None:
        return False
    try:
        jsonschema.validate(parsed, schema)
    except jsonschema.ValidationError:
        return False
    return True


@dataclass
class Scored:
    index: int
    answer: str
    reference: str
    f1: float
    fields: dict[str, bool]  # exact match per field of a JSON reference
    json_valid: bool
    schema_valid: bool | None
    language: str | None
    in_language: bool
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    fact_recall: float | None = None  # share of the reference's grounded facts stated; None: it has none
    missed_facts: list[str] = field(default_factory=list)
    invented_facts: list[str] = field(default_factory=list)


def input_text(messages: list[dict[str, Any]]) -> str:
    """Everything the model was given: each turn's text, tool calls' arguments included."""
    parts = []
    for message in messages:
        if isinstance(message.get("content"), str):
            parts.append(message["content"])
        parts += [call.get("function", {}).get("arguments", "") for call in message.get("tool_calls") or []]
    return "\n".join(parts)


def score(index: int, answer: str, reference: str, *, usage: Any, language: str, schema: dict | None,
          price_in: float, price_out: float, inputs: str = "") -> Scored:
    detected = detect_language(prose_of(answer))
    prompt_tokens, completion_tokens = usage.prompt_tokens, usage.completion_tokens
    facts = score_facts(prose_of(answer), prose_of(reference), inputs)
    return Scored(
        index=index, answer=answer, reference=reference, f1=round(answer_f1(answer, reference), 4),
        fields=field_matches(answer, reference), fact_recall=facts.recall, missed_facts=facts.missed,
        invented_facts=facts.invented,
        json_valid=parse_json(answer) is not None, schema_valid=schema_valid(answer, schema), language=detected,
        in_language=detected == language, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
        cost_usd=(prompt_tokens * price_in + completion_tokens * price_out) / 1_000_000,
    )


# Each tracked figure: its name in the results and its per-example value (None: not applicable).
METRICS = {
    "f1": lambda s: s.f1,
    "fact_recall": lambda s: s.fact_recall,
    "invented_fact_rate": lambda s: float(bool(s.invented_facts)),
    "json_valid_rate": lambda s: float(s.json_valid),
    "schema_valid_rate": lambda s: None if s.schema_valid is None else float(s.schema_valid),
    "language_rate": lambda s: float(s.in_language),
    "prompt_tokens_mean": lambda s: s.prompt_tokens,
    "completion_tokens_mean": lambda s: s.completion_tokens,
}


def metric_values(scores: list[Scored], metric: str) -> list[float]:
    return [v for v in map(METRICS[metric], scores) if v is not None]


def aggregate(scores: list[Scored]) -> dict[str, Any]:
    """Mean of every tracked figure with its bootstrap 95% interval, and exact match per JSON field."""
    result: dict[str, Any] = {"examples": len(scores)}
    ci95: dict[str, list[float] | None] = {}
    for metric in METRICS:
        values = metric_values(scores, metric)
        result[metric] = round(sum(values) / len(values), 4) if values else None
        ci95[metric] = bootstrap_interval(values)
    result["ci95"] = ci95
    fields: dict[str, dict[str, Any]] = {}
    for path in sorted({p for s in scores for p in s.fields}):
        matches = [float(s.fields[path]) for s in scores if path in s.fields]
        fields[path] = {"examples": len(matches), "exact_match_rate": round(sum(matches) / len(matches), 4),
                        "ci95": bootstrap_interval(matches)}
    result["fields"] = fields
    result["cost_usd"] = round(sum(s.cost_usd for s in scores), 6)
    return result


def paired_differences(candidate: list[Scored], other: list[Scored]) -> dict[str, dict[str, Any]]:
    """Candidate minus other per tracked figure, with a paired bootstrap 95% interval (same examples)."""
    assert [s.index for s in candidate] == [s.index for s in other], "both models must answer the same examples"
    differences = {}
    for metric in METRICS:
        pairs = [(a, b) for a, b in zip(map(METRICS[metric], candidate), map(METRICS[metric], other), strict=True)
                 if a is not None and b is not None]
        if pairs:
            deltas = [a - b for a, b in pairs]
            differences[metric] = {"difference": round(sum(deltas) / len(deltas), 4),
                                   "ci95": bootstrap_interval(deltas)}
    return differences


def examples_digest(case_ids: list[str]) -> str:
    """sha256 of the held-out examples' ids (sorted): equal digests mean the same examples."""
    return hashlib.sha256("\n".join(sorted(case_ids)).encode()).hexdigest()


def summarize(candidate: str, cases: list[EvalCase], scores: dict[str, list[Scored]],
              models: dict[str, str]) -> dict[str, Any]:
    """The evaluation result: per-model figures, the candidate's paired differences, the examples' digest."""
    digest = examples_digest([c.id for c in cases])
    result: dict[str, Any] = {"status": "evaluated" if cases else NOT_EVALUATED, "candidate": candidate,
                              "examples": len(cases), "examples_sha256": digest, "models": {}, "differences": {}}
    if not cases:
        result["reason"] = "no held-out validation examples (validation.jsonl is empty)"
        return result
    for role, role_scores in scores.items():
        result["models"][role] = {"model": models[role], **aggregate(role_scores), "examples_sha256": digest}
        if role != "candidate":
            result["differences"][role] = paired_differences(scores["candidate"], role_scores)
    return result


# --- calling the models -----------------------------------------------------------------------


@dataclass
class EvalCase:
    id: str  # the example's content hash, as in features.parquet
    messages: list[dict[str, Any]]  # everything before the reference answer
    reference: str


def cases_from(validation: Path, limit: int) -> list[EvalCase]:
    """Held-out examples: the prompt up to the last assistant turn, and that turn as reference."""
    cases = []
    for example in iter_records(validation):
        messages = example["messages"]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        if isinstance(messages[last].get("content"), str):
            cases.append(EvalCase(id=content_hash(example), messages=messages[:last],
                                  reference=messages[last]["content"]))
        if len(cases) >= limit:
            break
    return cases


def with_system_prompt(messages: list[dict[str, Any]], prompt: str | None) -> list[dict[str, Any]]:
    if prompt is None:
        return messages
    return [{"role": "system", "content": prompt}, *[m for m in messages if m["role"] != "system"]]


def prices_for(model: str) -> tuple[float, float]:
    info = load_catalog().get(model)
    if model.startswith("ft:"):
        return info.finetuned_input, info.finetuned_output
    return info.base_input, info.base_output


def evaluate_model(chat: ChatModel, model: str, cases: list[EvalCase], *, system_prompt: str | None,
                   language: str, schema: dict | None, concurrency: int) -> list[Scored]:
    """Ask the model every case (bounded concurrency; the SDK retries 429s) and score the answers."""
    price_in, price_out = prices_for(model)

    def ask(index: int) -> Scored:
        case = cases[index]
        reply = chat.ask(with_system_prompt(case.messages, system_prompt))
        return score(index, reply.text, case.reference, usage=reply,
                     language=language, schema=schema, price_in=price_in, price_out=price_out,
                     inputs=input_text(case.messages))

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(ask, range(len(cases))))


def worst_examples_markdown(model: str, scores: list[Scored], cases: list[EvalCase], n: int = 5) -> str:
    lines = [f"# Weakest answers of `{model}` on held-out examples", ""]
    weakest = sorted(scores, key=lambda s: (1.0 if s.fact_recall is None else s.fact_recall, s.f1, s.index))
    for s in weakest[:n]:
        question = next((m["content"] for m in reversed(cases[s.index].messages) if m["role"] == "user"), "")
        facts = "-" if s.fact_recall is None else f"{s.fact_recall:.2f}"
        lines += [f"## Example {s.index}: fact recall {facts}, F1 {s.f1:.2f}, JSON {'yes' if s.json_valid else 'no'}, "
                  f"language {s.language}", "", f"**User:** {question}", "", f"**Answer:** {s.answer}", "",
                  f"**Reference:** {s.reference}", "",
                  f"**Facts missed:** {', '.join(s.missed_facts) or 'none'}; "
                  f"**invented:** {', '.join(s.invented_facts) or 'none'}", ""]
    return "\n".join(lines)


def evaluate(run_dir: Path, candidate: str, current: str | None, settings: Settings,
             resources: RunResources) -> tuple[dict[str, Any], dict[str, list[Scored]], list[EvalCase]]:
    """Ask candidate, baseline (and the promoted model) the same held-out examples; return the summary."""
    cases = cases_from(run_dir / "validation.jsonl", settings.eval_max_examples)
    models = {"candidate": candidate, "baseline": base_model_of(candidate)}
    if current and current != candidate:
        models["current"] = current
    scores: dict[str, list[Scored]] = {}
    if cases:
        schema = json.loads(Path(settings.eval_json_schema).read_text("utf-8")) if settings.eval_json_schema else None
        prompts = {"baseline": settings.baseline_system_prompt}
        for role, model in models.items():
            chat = resources.chat_for(model)  # where the model lives: an incumbent on its own backend
            scores[role] = evaluate_model(chat, model, cases, system_prompt=prompts.get(role),
                                          language=settings.eval_language, schema=schema,
                                          concurrency=settings.eval_concurrency)
    result = {**summarize(candidate, cases, scores, models), "language": settings.eval_language}
    if settings.eval_judge and cases:
        result["judge"] = judge_candidate(run_dir, candidate, cases, scores["candidate"], settings, resources)
        result["models"]["candidate"]["judge"] = {k: v for k, v in result["judge"].items() if k != "per_example"}
    return result, scores, cases


def judge_candidate(run_dir: Path, candidate: str, cases: list[EvalCase], scores: list[Scored],
                    settings: Settings, resources: RunResources) -> dict[str, Any]:
    """The LLM judge's verdicts on the candidate's answers, within what the budget leaves after training."""
    model = settings.eval_judge_model or base_model_of(candidate)
    chat = resources.chat_for(model)
    report = run_dir / "report.json"
    training = json.loads(report.read_text("utf-8")).get("estimated_cost_usd", 0.0) if report.is_file() else 0.0
    budget = None if settings.max_cost_usd is None else settings.max_cost_usd - training
    return judge_answers(chat, model, cases, scores, cache_dir=Path(settings.work_dir) / "judge",
                         budget_usd=budget, concurrency=settings.eval_concurrency)


def _with_interval(value: float | None, interval: list[float] | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else f"{value:.3f}"


def evaluation_table(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per model: each tracked figure with its 95% interval."""
    return [{"role": role, "model": figures["model"], "examples": figures["examples"],
             **{metric: _with_interval(figures[metric], figures["ci95"][metric]) for metric in METRICS}}
            for role, figures in result["models"].items()]


@task(name="evaluate-models", cache_policy=RUN_CACHE, retries=2, retry_delay_seconds=[5, 30],
      retry_condition_fn=retry_on_transient)
def evaluate_models(run_dir: str, candidate: str, current: str | None, settings: Settings,
                    resources: RunResources) -> dict[str, Any]:
    """Return the figures of candidate, baseline (and promoted model) with intervals; writes eval.json."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact
    from prefect.logging import get_run_logger

    result, scores, cases = evaluate(Path(run_dir), candidate, current, settings, resources)
    per_example = {role: [asdict(s) for s in role_scores] for role, role_scores in scores.items()}
    Path(run_dir, "eval.json").write_text(json.dumps({**result, "per_example": per_example}, indent=2,
                                                     ensure_ascii=False), "utf-8")
    if result["status"] == NOT_EVALUATED:
        get_run_logger().warning("%s: %s", NOT_EVALUATED, result["reason"])
        return result
    create_markdown_artifact(worst_examples_markdown(candidate, scores["candidate"], cases),
                             key="ftflow-eval-worst-examples",
                             description="Held-out examples the fine-tuned model answered worst")
    create_table_artifact(evaluation_table(result), key="ftflow-eval",
                          description="Held-out evaluation with bootstrap 95% intervals: fine-tuned vs baseline")
    return result
