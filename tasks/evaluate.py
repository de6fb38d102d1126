"""Evaluate: the fine-tuned model against its baseline on the held-out validation split.

The candidate is the fine-tuned model with the short prompt it was trained with (the
validation examples as prepared); the baseline is the base model with the full production
prompt (`baseline_system_prompt`). Per example and aggregated:
- format: valid JSON rate, and JSON-schema validity when a schema is configured;
- language: share of answers in the target language (langdetect, offline profiles);
- similarity to the reference answer: token F1 (SQuAD-style, multiset overlap);
- prompt and completion tokens actually used (the API's `usage`), and what they cost.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jsonschema
import openai
from prefect import task

from ftflow.caching import RUN_CACHE
from ftflow.catalog import load_catalog
from ftflow.jsonl import iter_records
from ftflow.providers import chat_for
from ftflow.providers.base import retry_on_transient
from ftflow.settings import Settings

WORD = re.compile(r"\w+", re.UNICODE)
_langdetect_lock = threading.Lock()


# --- metric functions (pure) ------------------------------------------------------------------


def token_f1(answer: str, reference: str) -> float:
    """Token-overlap F1 between an answer and the reference (case-folded words, as multisets)."""
    a, r = Counter(WORD.findall(answer.casefold())), Counter(WORD.findall(reference.casefold()))
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
    json_valid: bool
    schema_valid: bool | None
    language: str | None
    in_language: bool
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


def score(index: int, answer: str, reference: str, *, usage: Any, language: str, schema: dict | None,
          price_in: float, price_out: float) -> Scored:
    detected = detect_language(prose_of(answer))
    prompt_tokens, completion_tokens = usage.prompt_tokens, usage.completion_tokens
    return Scored(
        index=index, answer=answer, reference=reference, f1=round(token_f1(answer, reference), 4),
        json_valid=parse_json(answer) is not None, schema_valid=schema_valid(answer, schema), language=detected,
        in_language=detected == language, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
        cost_usd=(prompt_tokens * price_in + completion_tokens * price_out) / 1_000_000,
    )


def aggregate(scores: list[Scored]) -> dict[str, Any]:
    n = len(scores) or 1
    with_schema = [s.schema_valid for s in scores if s.schema_valid is not None]
    return {
        "examples": len(scores),
        "f1": round(sum(s.f1 for s in scores) / n, 4),
        "json_valid_rate": round(sum(s.json_valid for s in scores) / n, 4),
        "schema_valid_rate": round(sum(with_schema) / len(with_schema), 4) if with_schema else None,
        "language_rate": round(sum(s.in_language for s in scores) / n, 4),
        "prompt_tokens_mean": round(sum(s.prompt_tokens for s in scores) / n, 2),
        "completion_tokens_mean": round(sum(s.completion_tokens for s in scores) / n, 2),
        "cost_usd": round(sum(s.cost_usd for s in scores), 6),
    }


# --- calling the models -----------------------------------------------------------------------


@dataclass
class EvalCase:
    messages: list[dict[str, Any]]  # everything before the reference answer
    reference: str


def cases_from(validation: Path, limit: int) -> list[EvalCase]:
    """Held-out examples: the prompt up to the last assistant turn, and that turn as reference."""
    cases = []
    for example in iter_records(validation):
        messages = example["messages"]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        if isinstance(messages[last].get("content"), str):
            cases.append(EvalCase(messages=messages[:last], reference=messages[last]["content"]))
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


def evaluate_model(client: openai.OpenAI, model: str, cases: list[EvalCase], *, system_prompt: str | None,
                   language: str, schema: dict | None, concurrency: int, served_as: str | None = None) -> list[Scored]:
    """Ask the model every case (bounded concurrency; the SDK retries 429s) and score the answers."""
    price_in, price_out = prices_for(model)

    def ask(index: int) -> Scored:
        case = cases[index]
        reply = client.chat.completions.create(model=served_as or model, temperature=0,
                                               messages=with_system_prompt(case.messages, system_prompt))
        return score(index, reply.choices[0].message.content or "", case.reference, usage=reply.usage,
                     language=language, schema=schema, price_in=price_in, price_out=price_out)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(ask, range(len(cases))))


def worst_examples_markdown(model: str, scores: list[Scored], cases: list[EvalCase], n: int = 5) -> str:
    lines = [f"# Weakest answers of `{model}` on held-out examples", ""]
    for s in sorted(scores, key=lambda s: (s.f1, s.index))[:n]:
        question = next((m["content"] for m in reversed(cases[s.index].messages) if m["role"] == "user"), "")
        lines += [f"## Example {s.index}: F1 {s.f1:.2f}, JSON {'yes' if s.json_valid else 'no'}, "
                  f"language {s.language}", "", f"**User:** {question}", "", f"**Answer:** {s.answer}", "",
                  f"**Reference:** {s.reference}", ""]
    return "\n".join(lines)


@task(name="evaluate-models", cache_policy=RUN_CACHE, retries=2, retry_delay_seconds=[5, 30],
      retry_condition_fn=retry_on_transient)
def evaluate_models(run_dir: str, candidate: str, current: str | None, settings: Settings) -> dict[str, Any]:
    """Return aggregated metrics of candidate, baseline (and current promoted model); writes eval.json."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    cases = cases_from(Path(run_dir) / "validation.jsonl", settings.eval_max_examples)
    schema = json.loads(Path(settings.eval_json_schema).read_text("utf-8")) if settings.eval_json_schema else None
    runs = {"candidate": (candidate, None), "baseline": (settings.model, settings.baseline_system_prompt)}
    if current and current != candidate:
        runs["current"] = (current, None)
    results: dict[str, Any] = {"examples": len(cases), "language": settings.eval_language, "models": {}}
    per_example: dict[str, list[dict[str, Any]]] = {}
    for role, (model, prompt) in runs.items():
        client, name = chat_for(settings, model)  # where the model lives: an incumbent on its own backend
        scores = evaluate_model(client, model, cases, served_as=name, system_prompt=prompt,
                                language=settings.eval_language, schema=schema, concurrency=settings.eval_concurrency)
        results["models"][role] = {"model": model, **aggregate(scores)}
        per_example[role] = [asdict(s) for s in scores]
        if role == "candidate":
            create_markdown_artifact(worst_examples_markdown(model, scores, cases), key="ftflow-eval-worst-examples",
                                     description="Held-out examples the fine-tuned model answered worst")
    Path(run_dir, "eval.json").write_text(json.dumps({**results, "per_example": per_example}, indent=2,
                                                     ensure_ascii=False), "utf-8")
    create_table_artifact([{"role": role, **metrics} for role, metrics in results["models"].items()],
                          key="ftflow-eval", description="Held-out evaluation: fine-tuned vs baseline")
    return results
