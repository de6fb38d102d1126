from __future__ import annotations

import pandas as pd
import pytest

from ftflow.encodings import get_encoding
from tasks.budget import count_example_tokens, default_epochs, estimate
from tasks.passes.chat import ChatPass
from tasks.readers import ExtractOptions
from tasks.transform import TransformOptions


def test_count_follows_the_cookbook():
    enc = get_encoding("cl100k_base")
    example = {
        "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "Hi", "name": "anna"},
            {"role": "assistant", "content": "Hello there!"},
        ]
    }
    expected = 3  # reply priming
    for m in example["messages"]:
        expected += 3 + sum(len(enc.encode(v)) for v in m.values())
    expected += 1  # the name
    total, assistant = count_example_tokens(example, enc)
    assert total == expected
    assert assistant == len(enc.encode("Hello there!"))


def test_tools_and_tool_calls_are_counted_and_weight_is_not():
    enc = get_encoding("o200k_base")
    base = {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}
    weighted = {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 1}]}
    with_tools = {**base, "tools": [{"type": "function", "function": {"name": "f"}}]}
    assert count_example_tokens(weighted, enc) == count_example_tokens(base, enc)
    assert count_example_tokens(with_tools, enc)[0] > count_example_tokens(base, enc)[0]


@pytest.mark.parametrize(
    ("n", "epochs"), [(10, 10), (20, 5), (3, 25), (1, 25), (100, 3), (8333, 3), (8334, 2), (30000, 1)]
)
def test_default_epochs_rule(n, epochs):
    assert default_epochs(n) == epochs


def chat_pass(model: str = "gpt-4o-mini") -> ChatPass:
    return ChatPass.for_model(model, ExtractOptions(), TransformOptions(), 0.1)


def test_billing_tokens_clip_each_training_example_to_the_limit():
    features = pd.DataFrame({"split": ["train", "train", "train", "validation"], "tokens": [10, 500, 70000, 9],
                             "assistant_tokens": [1, 2, 3, 4]})
    budget = estimate(features, chat_pass("gpt-4o-mini-2024-07-18"), model="gpt-4o-mini-2024-07-18",
                      encoding="o200k_base", over_limit=0, n_epochs=3, max_cost_usd=None)
    assert budget.training_context == 65536
    assert budget.billing_tokens == (10 + 500 + 65536) * 3
    assert budget.tokens["total"] == 10 + 500 + 70000 + 9 and budget.tokens["assistant"] == 10


def test_estimate_prices_training_tokens_only():
    features = pd.DataFrame(
        {"split": ["train"] * 10 + ["validation"], "tokens": [1000] * 11, "assistant_tokens": [100] * 11}
    )
    budget = estimate(features, chat_pass(), model="gpt-4o-mini", encoding="o200k_base", over_limit=0,
                      n_epochs=None, max_cost_usd=0.01)
    assert budget.n_epochs == 10  # 10 examples: 100 // 10
    assert budget.billing_tokens == 10 * 1000 * 10
    assert budget.estimated_cost_usd == pytest.approx(100_000 / 1e6 * 3.00)
    assert budget.within_budget is False
    assert budget.tokens["total"] == 11000 and budget.tokens["train"] == 10000
