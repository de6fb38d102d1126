"""Budget: count tokens as OpenAI's cookbook does, pick epochs, estimate the training cost.

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

if TYPE_CHECKING:
    import pandas as pd

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


def billing_tokens(train_tokens: pd.Series, limit: int, n_epochs: int) -> int:
    """sum(min(limit, tokens)) x epochs: what a fine-tuning job is billed for."""
    return int(train_tokens.clip(upper=limit).sum()) * n_epochs


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


def estimate(
    features: pd.DataFrame,
    *,
    model: str,
    encoding: str,
    over_limit: int,
    n_epochs: int | None,
    max_cost_usd: float | None,
) -> Budget:
    """Return the token statistics, epochs, billing tokens and estimated training cost."""
    catalog = load_catalog()
    info = catalog.get(model)
    train = features[features["split"] == "train"]
    tokens = features["tokens"]
    epochs = n_epochs if n_epochs is not None else default_epochs(len(train))
    billed = billing_tokens(train["tokens"], info.training_context, epochs)
    cost = round(billed / 1_000_000 * info.training, 4)
    return Budget(
        model=info.name,
        encoding=encoding,
        training_context=info.training_context,
        tokens={
            "total": int(tokens.sum()),
            "assistant": int(features["assistant_tokens"].sum()),
            "train": int(train["tokens"].sum()),
            "max_example": int(tokens.max()) if len(tokens) else 0,
            "p50_example": int(tokens.quantile(0.5)) if len(tokens) else 0,
            "p95_example": int(tokens.quantile(0.95)) if len(tokens) else 0,
            "over_limit": over_limit,
        },
        n_epochs=epochs,
        n_epochs_source="user" if n_epochs is not None else "openai-default-rule",
        billing_tokens=billed,
        price_per_1m_training_usd=info.training,
        estimated_cost_usd=cost,
        max_cost_usd=max_cost_usd,
        within_budget=max_cost_usd is None or cost <= max_cost_usd,
        prices_as_of=catalog.as_of,
    )


def gemini_features(split_paths: dict[str, str]) -> pd.DataFrame:
    """split / tokens / assistant_tokens of each example, by Gemini's documented estimate."""
    import pandas as pd

    from ftflow.formats.gemini import assistant_tokens, example_tokens
    from ftflow.jsonl import loads_exact

    rows = []
    for name, path in split_paths.items():
        with open(path, "rb") as f:
            for line in f:
                record = loads_exact(line)
                rows.append((name, example_tokens(record), assistant_tokens(record)))
    return pd.DataFrame(rows, columns=["split", "tokens", "assistant_tokens"])


@task(name="estimate-budget", cache_policy=RUN_CACHE)
def estimate_budget(
    features_path: str,
    model: str,
    encoding: str,
    over_limit: int,
    n_epochs: int | None,
    max_cost_usd: float | None,
    split_paths: dict[str, str] | None = None,
) -> Budget:
    """Return the token and cost budget of the prepared training set.

    A model whose catalogue entry has `token_rule = "gemini"` is counted by Gemini's documented
    estimate from the split files (`split_paths`: split name -> path), and `encoding` says so."""
    import pandas as pd

    if load_catalog().get(model).token_rule == "gemini" and split_paths:
        from ftflow.formats.gemini import TOKEN_RULE

        features, encoding = gemini_features(split_paths), TOKEN_RULE
    else:
        features = pd.read_parquet(features_path, columns=["split", "tokens", "assistant_tokens"])
    return estimate(
        features,
        model=model,
        encoding=encoding,
        over_limit=over_limit,
        n_epochs=n_epochs,
        max_cost_usd=max_cost_usd,
    )
