"""The model catalogue: training context and dated prices, read from `data/models.toml`."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from ftflow.errors import ConfigError


@dataclass(frozen=True)
class ModelInfo:
    name: str
    training_context: int
    training: float  # USD per 1M trained tokens
    finetuned_input: float
    finetuned_output: float
    base_input: float
    base_output: float
    encoding: str | None = None  # for models tiktoken does not know (open models)
    dpo_training: float | None = None  # USD per 1M DPO-trained tokens; None: the model takes no DPO
    dpo_training_source: str = ""
    token_rule: str | None = None  # "gemini": the budget counts Gemini's documented estimate (ftflow/formats/gemini.py)


HOURS_PER_MONTH = 730  # 8,760 hours a year / 12


@dataclass(frozen=True)
class Hosting:
    """What a deployed fine-tuned model costs while deployed, whether it answers or not."""

    usd_per_hour: float
    as_of: str
    source: str

    @property
    def usd_per_month(self) -> float:
        return round(self.usd_per_hour * HOURS_PER_MONTH, 2)


@dataclass(frozen=True)
class Catalog:
    as_of: str
    source: str
    models: dict[str, ModelInfo]
    aliases: dict[str, str]
    hosting: dict[str, Hosting] = field(default_factory=dict)  # backend -> its hosting fee; absent: none

    def hosting_of(self, backend: str | None) -> Hosting | None:
        """The backend's hosting fee for a deployed fine-tuned model, or None where it charges none."""
        return self.hosting.get(backend or "")

    def get(self, model: str) -> ModelInfo:
        """Return the entry for a model, an alias, or a fine-tuned `ft:<base>:...` id."""
        name = base_model_of(model)
        name = self.aliases.get(name, name)
        name = name if name in self.models else self.derived_from(name) or name
        if name not in self.models:
            known = ", ".join(sorted(self.models))
            raise ConfigError(f"model {model!r} is not in the price table ({known})")
        return self.models[name]


    def derived_from(self, model: str) -> str | None:
        """The catalogue model a provider's fine-tuned name is built on.

        Together names a fine-tuned model `<user>/<base name>-<suffix>-<id>`: the longest
        catalogue model whose name (without its organisation) starts it.
        """
        tail = model.rsplit("/", 1)[-1]
        matches = [name for name in self.models if tail.startswith(name.rsplit("/", 1)[-1] + "-")]
        return max(matches, key=len) if matches else None


def base_model_of(model: str) -> str:
    """`ft:gpt-4o-mini-2024-07-18:org:suffix:id` (OpenAI), `gpt-4o-mini-2024-07-18.ft-<id>-<suffix>` (Azure)
    -> `gpt-4o-mini-2024-07-18`; `<user>/Meta-Llama-3.1-8B-Instruct-Reference-<suffix>-<id>` (Together)
    -> the catalogue's `meta-llama/Meta-Llama-3.1-8B-Instruct-Reference`;
    `gemini-2.5-flash@projects/<p>/locations/<l>/endpoints/<e>` (Vertex, ftflow's name) -> `gemini-2.5-flash`;
    `arn:aws:bedrock:<region>:<account>:custom-model/<base>/<id>` (Bedrock) -> `<base>`."""
    if "@projects/" in model:
        return model.split("@", 1)[0]
    if model.startswith("arn:aws:bedrock:") and ":custom-model/" in model:
        return model.split(":custom-model/", 1)[1].rsplit("/", 1)[0]
    if model.startswith("ft:"):
        return model.split(":")[1]
    if ".ft-" in model:
        return model.split(".ft-", 1)[0]
    return load_catalog().derived_from(model) or model


def short_model(model: str | None) -> str:
    """A base model as people call it: its shortest alias (`gpt-4o-mini`), the name after an org's slash."""
    if not model:
        return "-"
    aliases = [alias for alias, name in load_catalog().aliases.items() if model in (alias, name)]
    return min([*aliases, model.rsplit("/", 1)[-1]], key=len)


@cache
def load_catalog() -> Catalog:
    text = resources.files("ftflow").joinpath("data/models.toml").read_text("utf-8")
    raw = tomllib.loads(text)
    models: dict[str, ModelInfo] = {}
    aliases: dict[str, str] = {}
    for name, entry in raw["models"].items():
        entry = dict(entry)
        for alias in entry.pop("aliases", []):
            aliases[alias] = name
        models[name] = ModelInfo(name=name, **entry)
    hosting = {backend: Hosting(**entry) for backend, entry in raw.get("hosting", {}).items()}
    return Catalog(as_of=raw["as_of"], source=raw["source"], models=models, aliases=aliases, hosting=hosting)
