"""The one OpenAI client factory, for the three backends; the only place keys are read.

- `local`: the bundled service. With `service_url` set (FTFLOW_SERVICE_URL), the client talks
  to that one, with the key in FTFLOW_SERVICE_API_KEY; otherwise a service is started in this
  process on a free loopback port (once per process) with a fresh random key.
- `openai`: OPENAI_API_KEY, and optionally OPENAI_BASE_URL, OPENAI_ORG_ID, OPENAI_PROJECT_ID.
- `azure`: AZURE_OPENAI_API_KEY, the endpoint (settings or AZURE_OPENAI_ENDPOINT), api version.

Keys come from the environment (or a Prefect Secret block named in FTFLOW_API_KEY_BLOCK) and
are never flow parameters, never logged: `describe()` names a backend without its key.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import openai

from ftflow.errors import ConfigError
from ftflow.settings import Settings

_local_lock = threading.Lock()
_local_service: Any = None


def _secret(env_name: str) -> str | None:
    value = os.environ.get(env_name)
    block = os.environ.get("FTFLOW_API_KEY_BLOCK")
    if value is None and block:
        from prefect.blocks.system import Secret

        value = Secret.load(block).get()
    return value


def local_service(settings: Settings) -> Any:
    """The in-process local service, started on first use."""
    global _local_service
    with _local_lock:
        if _local_service is None:
            from localai.server import LocalService

            _local_service = LocalService(data_dir=settings.service_data_dir).start()
        return _local_service


def make_client(settings: Settings, *, max_retries: int = 2) -> openai.OpenAI:
    timeout = settings.request_timeout_seconds
    if settings.backend == "local":
        if settings.service_url:
            key = _secret("FTFLOW_SERVICE_API_KEY")
            if not key:
                raise ConfigError("FTFLOW_SERVICE_URL is set but FTFLOW_SERVICE_API_KEY is not")
            return openai.OpenAI(base_url=settings.service_url, api_key=key, max_retries=max_retries, timeout=timeout)
        service = local_service(settings)
        return openai.OpenAI(base_url=service.base_url, api_key=service.api_key, max_retries=max_retries,
                             timeout=timeout)
    if settings.backend == "openai":
        key = _secret("OPENAI_API_KEY")
        if not key:
            raise ConfigError("backend openai needs OPENAI_API_KEY in the environment")
        return openai.OpenAI(api_key=key, max_retries=max_retries, timeout=timeout,
                             base_url=os.environ.get("OPENAI_BASE_URL"),
                             organization=os.environ.get("OPENAI_ORG_ID"), project=os.environ.get("OPENAI_PROJECT_ID"))
    if settings.backend == "azure":
        key = _secret("AZURE_OPENAI_API_KEY")
        endpoint = settings.azure_endpoint or os.environ.get("AZURE_OPENAI_ENDPOINT")
        if not key or not endpoint:
            raise ConfigError("backend azure needs AZURE_OPENAI_API_KEY and an endpoint (AZURE_OPENAI_ENDPOINT)")
        return openai.AzureOpenAI(api_key=key, azure_endpoint=endpoint, api_version=settings.azure_api_version,
                                  max_retries=max_retries, timeout=timeout)
    raise ConfigError(f"unknown backend {settings.backend!r}")


def describe(settings: Settings, client: openai.OpenAI) -> str:
    """Which provider this is, for ledgers and reports: backend and URL, never the key.

    The in-process local service gets a new port each time; its identity is its data dir.
    """
    if settings.backend == "local" and not settings.service_url:
        return f"local:{settings.service_data_dir.resolve()}"
    return f"{settings.backend}:{client.base_url}"
