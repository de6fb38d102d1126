"""The bundled local service (localai/), in OpenAI's dialect: a fine-tuning provider with no account.

It behaves like OpenAI (same states, job `metadata` for the idempotency key, Uploads API),
so this is the OpenAI implementation with the service's identity: its URL when one runs
at `service_url`, else the data dir of the service started in this process (whose port
changes from run to run).
"""

from __future__ import annotations

from ftflow.providers.openai import OpenAIProvider


class LocalProvider(OpenAIProvider):
    backend = "local"

    @property
    def identity(self) -> str:
        if self.settings.service_url:
            return f"local:{self.client.base_url}"
        return f"local:{self.settings.service_data_dir.resolve()}"
