"""Budget: count tokens as OpenAI's cookbook does, pick epochs, estimate the training cost.

What a dataset's records weigh is its record pass's to say (`tally`: chat examples and
preference pairs count differently); epochs, billing and price are the same for all.

Token counting follows the cookbook's data-preparation notebook ("Data preparation and
analysis for chat model fine-tuning"): 3 tokens per message, 1 per `name`, every string
value encoded, 3 to prime the reply; we add tools and tool calls, encoded as JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import tiktoken
from prefect import task

from ftflow.caching import RUN_CACHE
from ftflow.catalog import load_catalog
from ftflow.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from tasks.passes.base import RecordPass

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3

# OpenAI's default epoch rule (from the cookbook): aim at 3 epochs, keep examples x epochs in
# [100, 25_000] and epochs in [1, 25].
TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25


def _text_of(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
        return "".join(str(p.get("text", "")) for p in value)  # content as text parts: the model sees the text
    if value is None or isinstance(value, bool | int | float):
        return None  # e.g. `weight`: not text the model sees
    return json.dumps(value, ensure_ascii=False)


@lru_cache(maxsize=64)
def _repeated_tokens(text: str, encoding: tiktoken.Encoding) -> int:
    # Role names and the system prompt stand in nearly every example: count each once.
    return len(encoding.encode_ordinary(text))


def count_example_tokens(example: dict[str, Any], encoding: tiktoken.Encoding) -> tuple[int, int]:
    """Return (tokens, assistant tokens) of a well-formed chat example."""
    total = REPLY_PRIMING_TOKENS
    assistant = 0
    for message in example["messages"]:
        total += TOKENS_PER_MESSAGE
        system = message.get("role") == "system"
        for key, value in message.items():
            if key == "weight":
                continue
            text = value if type(value) is str else _text_of(value)
            if text is None:
                continue
            n = _repeated_tokens(text, encoding) if system or key == "role" else len(encoding.encode_ordinary(text))
            total += n
            if key == "name":
                total += TOKENS_PER_NAME
            if message.get("role") == "assistant" and key in ("content", "tool_calls"):
                assistant += n
    for key in ("tools", "functions"):
        if example.get(key):
            total += len(encoding.encode_ordinary(json.dumps(example[key], ensure_ascii=False)))
    return total, assistant


def default_epochs(n_train: int) -> int:
    """OpenAI's default number of epochs for a training set of n_train examples."""
    if n_train <= 0:
        return TARGET_EPOCHS
    if n_train * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n_train)
    if n_train * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n_train)
    return TARGET_EPOCHS


@dataclass
class Budget:
    model: str
    encoding: str
    training_context: int
    tokens: dict[str, int]
    n_epochs: int
    n_epochs_source: str
    billing_tokens: int
    price_per_1m_training_usd: float
    estimated_cost_usd: float
    max_cost_usd: float | None
    within_budget: bool
    prices_as_of: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate(features: pd.DataFrame, record_pass: RecordPass, *, model: str, encoding: str, over_limit: int,
             n_epochs: int | None, max_cost_usd: float | None) -> Budget:
    """Return the budget of a de-duplicated features frame: its tokens as its record pass counts them,
    epochs (the user's, else OpenAI's default rule on the training records), billing tokens and
    the training cost at the price table's price for the pass's method."""
    catalog = load_catalog()
    info = catalog.get(model)
    price = info.dpo_training if record_pass.method == "dpo" else info.training
    if price is None:
        raise ConfigError(f"model {model!r} has no {record_pass.method} training price in the price table")
    tokens, billed_per_epoch = record_pass.tally(features, over_limit)
    epochs = n_epochs if n_epochs is not None else default_epochs(int((features["split"] == "train").sum()))
    billed = billed_per_epoch * epochs
    cost = round(billed / 1_000_000 * price, 4)
    return Budget(
        model=info.name,
        encoding=encoding,
        training_context=info.training_context,
        tokens=tokens,
        n_epochs=epochs,
        n_epochs_source="user" if n_epochs is not None else "openai-default-rule",
        billing_tokens=billed,
        price_per_1m_training_usd=price,
        estimated_cost_usd=cost,
        max_cost_usd=max_cost_usd,
        within_budget=max_cost_usd is None or cost <= max_cost_usd,
        prices_as_of=catalog.as_of,
    )


def sequence_figures(sequences: pd.Series) -> dict[str, int]:
    """Largest, median and 95th percentile length of the sequences trained on."""
    return {"max_example": int(sequences.max()) if len(sequences) else 0,
            "p50_example": int(sequences.quantile(0.5)) if len(sequences) else 0,
            "p95_example": int(sequences.quantile(0.95)) if len(sequences) else 0}


@task(name="estimate-budget", cache_policy=RUN_CACHE)
def estimate_budget(features_path: str, record_pass: RecordPass, model: str, over_limit: int, n_epochs: int | None,
                    max_cost_usd: float | None, split_paths: dict[str, str] | None = None) -> Budget:
    """Return the token and cost budget of the prepared training set, counted as its record pass counts.

    A model whose catalogue entry has `token_rule = "gemini"` is counted by Gemini's documented
    estimate from the split files (`split_paths`: split name -> path), and `encoding` says so."""
    import pandas as pd

    if load_catalog().get(model).token_rule == "gemini" and split_paths:
        from ftflow.formats.gemini import TOKEN_RULE

        features, encoding = record_pass.gemini_features(split_paths), TOKEN_RULE
    else:
        features, encoding = pd.read_parquet(features_path, columns=record_pass.budget_columns), record_pass.encoding
    return estimate(features, record_pass, model=model, encoding=encoding, over_limit=over_limit, n_epochs=n_epochs,
                    max_cost_usd=max_cost_usd)
