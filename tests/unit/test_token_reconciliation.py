"""Token counts against an outside reference, and the service agreeing with the budget.

The reference is the OpenAI Cookbook's data-preparation notebook run on its own toy file
(tests/data/toy_chat_fine_tuning.jsonl, see its SOURCE.md): the figures below are what that
notebook prints, not what our code computes. Then every kind of example (tools, tool calls,
names, weights, non-ASCII text) is counted by the pipeline's budget and by the service's own
counter, which must agree, since one estimates what the other bills.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ftflow.encodings import encoding_for_model, get_encoding
from localai.engine import jobs as service_jobs
from localai.engine.tokens import count_example_tokens as service_count
from tasks.budget import count_example_tokens as budget_count
from tasks.budget import default_epochs

TOY = Path(__file__).parents[1] / "data" / "toy_chat_fine_tuning.jsonl"
CL100K_MODEL = "gpt-3.5-turbo-0125"  # a fine-tunable model on cl100k_base, the notebook's encoding


def toy_examples() -> list[dict]:
    return [json.loads(line) for line in TOY.read_text(encoding="utf-8").splitlines()]


def test_the_toy_file_is_the_cookbooks():
    assert TOY.stat().st_size == 27_385 and len(toy_examples()) == 5


def test_budget_counts_the_toy_file_as_the_cookbook_notebook_prints():
    encoding = get_encoding("cl100k_base")
    totals, assistant = zip(*(budget_count(example, encoding) for example in toy_examples()), strict=True)
    # "#### Distribution of num_total_tokens_per_example"
    assert (min(totals), max(totals)) == (26, 8032)
    assert (round(float(np.mean(totals)), 1), float(np.median(totals))) == (1648.4, 45.0)
    assert (round(float(np.quantile(totals, 0.1)), 1), round(float(np.quantile(totals, 0.9)), 1)) == (26.8, 4863.6)
    # "#### Distribution of num_assistant_tokens_per_example"
    assert (min(assistant), max(assistant)) == (4, 8000)
    assert (round(float(np.mean(assistant)), 1), float(np.median(assistant))) == (1610.2, 10.0)
    assert (round(float(np.quantile(assistant, 0.1)), 1), round(float(np.quantile(assistant, 0.9)), 1)) == (6.0, 4811.2)
    # "Dataset has ~4306 tokens ...", "train for 20 epochs", "charged for ~86120 tokens"
    billed = sum(min(4096, n) for n in totals)
    assert billed == 4306 and default_epochs(5) == 20 and billed * default_epochs(5) == 86_120


def test_the_service_counts_and_bills_the_toy_file_as_the_cookbook():
    assert [service_count(CL100K_MODEL, e) for e in toy_examples()] == [45, 111, 26, 28, 8032]
    assert service_jobs.default_epochs(5) == 20


GERMAN_TOOL_EXAMPLE = {
    "messages": [
        {"role": "system", "content": "Du bist der Alpenrad-Support."},
        {"role": "user", "content": "Wo ist meine Bestellung? Größe M, Farbe Grün."},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "bestellstatus", "arguments": '{"größe": "M", "farbe": "grün", "straße": "Maria-Theresien-Straße"}'},
        }]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"status": "unterwegs", "zustellung": "übermorgen"}'},
        {"role": "assistant", "content": "Deine Bestellung ist unterwegs und kommt übermorgen."},
    ],
    "tools": [{"type": "function", "function": {
        "name": "bestellstatus", "description": "Liefert den Status einer Bestellung für Größe und Farbe.",
        "parameters": {"type": "object", "properties": {
            "größe": {"type": "string", "description": "Rahmengröße (S, M, L)"},
            "farbe": {"type": "string", "description": "Farbe, z. B. grün oder weiß"},
        }},
    }}],
}
EXAMPLE_KINDS = {
    "plain": {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]},
    "non_ascii": {"messages": [{"role": "user", "content": "Grüß Gott, wo ist mein Fahrrad? 🚲"},
                               {"role": "assistant", "content": "Es ist unterwegs – übermorgen da."}]},
    "name_and_weight": {"messages": [{"role": "system", "content": "Sei knapp.", "name": "policy"},
                                     {"role": "user", "content": "Status?", "name": "kunde_42"},
                                     {"role": "assistant", "content": "Unterwegs.", "weight": 0},
                                     {"role": "user", "content": "Danke"},
                                     {"role": "assistant", "content": "Gern!", "weight": 1}]},
    "text_parts": {"messages": [{"role": "user", "content": [{"type": "text", "text": "Größe?"}]},
                                {"role": "assistant", "content": "M."}]},
    "tools_german": GERMAN_TOOL_EXAMPLE,
    "functions": {"messages": [{"role": "user", "content": "Wetter in Innsbruck?"},
                               {"role": "assistant", "function_call": {"name": "wetter", "arguments": '{"ort": "Innsbruck"}'}}],
                  "functions": [{"name": "wetter", "description": "Das Wetter für einen Ort.",
                                 "parameters": {"type": "object", "properties": {"ort": {"type": "string"}}}}]},
}


@pytest.mark.parametrize("model", ["gpt-4o-mini-2024-07-18", CL100K_MODEL])
@pytest.mark.parametrize("kind", sorted(EXAMPLE_KINDS))
def test_service_and_budget_agree_on_every_example_kind(kind, model):
    example = EXAMPLE_KINDS[kind]
    assert service_count(model, example) == budget_count(example, encoding_for_model(model))[0]


def test_tools_are_counted_as_the_text_the_model_reads_not_escaped():
    """Both count "Größe", not "Gr\\u00f6\\u00dfe": the cookbook counts strings as they are."""
    model = "gpt-4o-mini-2024-07-18"
    encoding = encoding_for_model(model)
    example = GERMAN_TOOL_EXAMPLE
    tools_as_read = len(encoding.encode_ordinary(json.dumps(example["tools"], ensure_ascii=False)))
    tools_escaped = len(encoding.encode_ordinary(json.dumps(example["tools"])))
    without_tools = service_count(model, {"messages": example["messages"]})
    assert service_count(model, example) == without_tools + tools_as_read
    assert tools_escaped > tools_as_read
