"""Fine-tuning providers behind one interface (`Provider`, in base.py), built by `get_provider`.

    backend   implementation              SDK                                   job key lives in
    local     LocalProvider  (local.py)   openai, the bundled service           job metadata
    openai    OpenAIProvider (openai.py)  openai                                job metadata
    azure     AzureProvider  (azure.py)   openai: AzureOpenAI (dated) / v1      suffix tag + ledger
    together  TogetherProvider (together.py) together (jobs, files), openai (chat) suffix tag + ledger
    vertex    VertexProvider (vertex.py)  google-genai (tuning, chat), google-cloud-storage  labels + ledger
    bedrock   BedrockProvider (bedrock.py) boto3: s3, bedrock, bedrock-runtime   clientRequestToken + ledger
    fireworks FireworksProvider (fireworks.py) fireworks-ai (datasets, jobs), openai (chat) job id + ledger

docs/providers.md maps each provider's states onto ftflow's lifecycle.
"""

from __future__ import annotations

import importlib
from typing import Any

from ftflow.client import (
    aws_session,
    fireworks_client,
    management_client,
    openai_client,
    together_client,
    vertex_clients,
)
from ftflow.errors import ConfigError
from ftflow.providers.base import Provider
from ftflow.settings import Settings

# backend -> (module, class); imported on first use, so a backend's SDK loads only when it is used
IMPLEMENTATIONS = {
    "local": ("ftflow.providers.local", "LocalProvider"),
    "openai": ("ftflow.providers.openai", "OpenAIProvider"),
    "azure": ("ftflow.providers.azure", "AzureProvider"),
    "together": ("ftflow.providers.together", "TogetherProvider"),
    "vertex": ("ftflow.providers.vertex", "VertexProvider"),
    "bedrock": ("ftflow.providers.bedrock", "BedrockProvider"),
    "fireworks": ("ftflow.providers.fireworks", "FireworksProvider"),
}


def provider_class(backend: str) -> type[Provider]:
    """The implementation of a backend (its class attributes: refusals, job slots, moderation model)."""
    if backend not in IMPLEMENTATIONS:
        raise ConfigError(f"unknown backend {backend!r}")
    module, name = IMPLEMENTATIONS[backend]
    return getattr(importlib.import_module(module), name)


def get_provider(settings: Settings, backend: str | None = None) -> Provider:
    """The provider of `backend` (default: the settings' backend), with its clients."""
    if backend and backend != settings.backend:
        settings = settings.model_copy(update={"backend": backend})
    cls: Any = provider_class(settings.backend)
    if settings.backend == "vertex":
        tuning, gcs, credentials = vertex_clients(settings)
        return cls(settings, credentials, tuning, gcs)
    if settings.backend == "bedrock":
        session, access_key = aws_session(settings)
        return cls(settings, access_key, session)
    if settings.backend == "fireworks":
        client, key = fireworks_client(settings)
        return cls(settings, key, client, openai_client(settings)[0])
    if settings.backend == "together":
        chat, key = openai_client(settings)
        return cls(settings, key, together_client(settings), chat)
    client, key = openai_client(settings)
    if settings.backend == "azure":
        return cls(settings, key, client, management=management_client(settings))
    return cls(settings, key, client)

