"""Models: the base models the service offers, and the fine-tuned models its jobs create."""

from __future__ import annotations

from typing import Any

from ftflow.catalog import load_catalog
from localai.exceptions import NotFound, PermissionDenied
from localai.store import Store, public

BASE_CREATED = 1_700_000_000
ORG = "ftflow-local"
# Base models (snapshots and aliases) that take `method: dpo`, per OpenAI's DPO guide.
DPO_MODELS = frozenset(
    {
        "gpt-4.1-2025-04-14",
        "gpt-4.1",
        "gpt-4.1-mini-2025-04-14",
        "gpt-4.1-mini",
        "gpt-4.1-nano-2025-04-14",
        "gpt-4.1-nano",
    }
)


def base_models() -> dict[str, int]:
    """Base model name (snapshot and alias) -> training context."""
    catalog = load_catalog()
    names = {name: info.training_context for name, info in catalog.models.items()}
    names.update({alias: catalog.models[target].training_context for alias, target in catalog.aliases.items()})
    return names


def base_of(model: str) -> str:
    """The base snapshot under a fine-tuned id `ft:<base>:<org>:<suffix>:<id>`."""
    return model.split(":")[1] if model.startswith("ft:") else model


class ModelsBackend:
    def __init__(self, store: Store) -> None:
        self.store = store

    def require(self, model: str, *, param: str = "model") -> dict[str, Any]:
        """The model's record; raise model_not_found as OpenAI does."""
        if model in base_models():
            return {"id": model, "object": "model", "created": BASE_CREATED, "owned_by": "system"}
        record = self.store.get("model", model)
        if record is None:
            raise NotFound(f"The model '{model}' does not exist", param=param, code="model_not_found")
        return record

    def list_models(self) -> dict[str, Any]:
        data = [{"id": m, "object": "model", "created": BASE_CREATED, "owned_by": "system"} for m in base_models()]
        data += [public(m) for m in self.store.list("model")]
        return {"object": "list", "data": data}

    def retrieve_model(self, model: str) -> dict[str, Any]:
        return public(self.require(model))

    def delete_model(self, model: str) -> dict[str, Any]:
        record = self.retrieve_model(model)
        if record["owned_by"] == "system":
            raise PermissionDenied("You have insufficient permissions for this operation.", param="model")
        self.store.delete("model", model)
        return {"id": model, "object": "model", "deleted": True}

    def register(self, model_id: str, *, created: int, training_file: str, job_id: str) -> None:
        self.store.put(
            "model",
            {
                "id": model_id,
                "object": "model",
                "created": created,
                "owned_by": ORG,
                "_training_file": training_file,
                "_job": job_id,
            },
        )
