"""The resources of a flow run: its ledger, its lineage store and its provider, built in one place.

A flow builds one `RunResources` from its resolved Settings and hands it to the tasks that
use the registry or a provider, as the argument `resources`; they take what they need from
it instead of building it from settings (the `ftflow` commands and the flows' hooks use this
class too). Each resource is made on first use, then kept: a command that only reads the
registry (`ftflow runs`) needs no API key, and a flow body that builds it does no I/O.

Why an argument, and how that keeps Prefect working:
- Caching: ftflow's cache policy (`RUN_CACHE`, ftflow/caching.py) leaves the `resources`
  argument out of a task's cache key. The resources follow from the settings, which the
  tasks that need them also take (and which the key covers), and a database engine or an
  SDK client cannot be hashed anyway. NO_CACHE tasks compute no key at all.
- Subflows: a flow run's parameters are JSON sent to the Prefect API, so a subflow (prepare
  and finetune under retrain) is handed the settings and builds its own; the database
  engine is one per URL and process (ftflow/store/database.py), so they share it.
- Processes: shard workers (the process pool, Dask) are handed plain option objects, never
  resources: nothing they do touches the database or a provider.
- Hooks such as `on_cancellation` run outside the flow run: they build their own from the
  run's stored parameters (`settings_of_parameters`).
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from ftflow.settings import Settings

if TYPE_CHECKING:  # each loads with its first use: `ftflow runs` needs no SDK, prepare no SQLAlchemy
    from ftflow.providers.base import ChatModel, Provider
    from ftflow.store.ledger import Ledger
    from ftflow.store.lineage import LineageStore


class RunResources:
    """A plain class on purpose: Prefect looks inside dataclasses and pydantic models among task
    arguments for futures and upstream results; a plain object it passes on as it is."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._providers: dict[str, Provider] = {}

    @cached_property
    def ledger(self) -> Ledger:
        from ftflow.store.ledger import Ledger

        return Ledger(self.settings.registry_url)

    @cached_property
    def lineage(self) -> LineageStore:
        from ftflow.store.lineage import LineageStore

        return LineageStore(self.settings.registry_url)

    @property
    def provider(self) -> Provider:
        """The provider of the settings' backend, with its clients."""
        return self.provider_of(self.settings.backend)

    def provider_of(self, backend: str) -> Provider:
        """The provider of `backend`, built on first use (an incumbent may live on another backend)."""
        from ftflow.providers import get_provider

        if backend not in self._providers:
            self._providers[backend] = get_provider(self.settings, backend)
        return self._providers[backend]

    def chat_for(self, model: str, *, backend: str | None = None, max_retries: int = 5) -> ChatModel:
        """`model`, to chat with where it lives.

        Where: `backend`, else the backend the lineage records for that model (an incumbent
        trained elsewhere is asked on its own backend), else the settings' backend. Its name
        there is the model's deployment when it has one (Azure), else the model id.
        """
        provider = self.provider_of(backend or self.lineage.backend_of(model) or self.settings.backend)
        return provider.chat(self.ledger.deployment_of(provider.identity, model) or provider.served_as(model),
                             max_retries=max_retries)
