"""Azure OpenAI: the same fine-tuning API on two surfaces, plus deployments on the control plane.

- `azure_surface = "v1"`: `{endpoint}/openai/v1/...` through `OpenAI(base_url=...)`;
- `azure_surface = "dated"`: `{endpoint}/openai/...?api-version=...` through `AzureOpenAI`.

Differences from OpenAI that matter here: job states `created|pending|running|...` (no
`validating_files`/`queued`); file states `uploaded|pending|running|processed|error|deleting|
deleted` (`notRunning` in old examples); `trainingType` goes in the body; no job `metadata` in
the GA dated schema, so the idempotency key lives in the model-name **suffix** (a 10-character
tag of the key; Azure's suffix is short) and in the ledger; no Uploads API (files < 512 MB).
A fine-tuned model answers only once it is **deployed** (ARM `PUT .../deployments/{name}`),
and inference then names the deployment, not the model.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, ClassVar

import httpx
import openai

from ftflow.errors import ConfigError, ProviderError, ProviderRefused
from ftflow.providers.base import (
    FileState,
    JobSpec,
    JobState,
    RemoteFile,
    RemoteJob,
    UploadProgress,
    error_message,
    key_tag,
    status_code,
    tagged_suffix,
)
from ftflow.providers.openai import OpenAIProvider, pages

log = logging.getLogger("ftflow.providers.azure")
SUFFIX_LIMIT = 18  # the Foundry docs' limit (the dated spec allows 40): the stricter one holds for both
FILE_LIMIT_BYTES = 512 * 1024 * 1024
ARM_API_VERSION = "2024-10-01"


class AzureProvider(OpenAIProvider):
    backend = "azure"
    key_home = "the model-name suffix (`<suffix>-<10-character key tag>`) and the ledger; no job metadata"
    job_states: ClassVar[dict[str, JobState]] = {
        "created": "pending", "pending": "pending", "notRunning": "pending", "validating_files": "pending",
        "queued": "pending", "running": "running", "succeeded": "succeeded", "failed": "failed",
        "cancelled": "cancelled", "canceled": "cancelled",
    }
    file_states: ClassVar[dict[str, FileState]] = {
        "uploaded": "pending", "pending": "pending", "running": "pending", "notRunning": "pending",
        "processed": "processed", "error": "error", "deleting": "deleted", "deleted": "deleted",
    }
    # Azure OpenAI quotas: 1 running fine-tuning job per resource, 20 queued (learn.microsoft.com, quotas-limits).
    job_slots: ClassVar[int | None] = 1
    # Azure's screening is Azure AI Content Safety, a separate resource ftflow does not call yet.
    moderation_model: ClassVar[str | None] = None
    refusals: ClassVar[dict[str, str]] = {
        **OpenAIProvider.refusals,
        "invalidTrainingType": "Azure needs a training type: set azure_training_type to Standard, GlobalStandard "
        "or Developer",
        "trainingTypeRequired": "Azure needs a training type: set azure_training_type to Standard, GlobalStandard "
        "or Developer",
        "quotaExceeded": "the Azure resource's fine-tuning quota is reached (1 running job, 50 files, 1 GB of "
        "files per resource); wait for the running job or delete old files",
        "ResourceQuotaExceeded": "the Azure resource's quota is reached; wait for the running job or raise the quota",
        "modelNotSupported": "this base model cannot be fine-tuned in this Azure region; pick another --model or "
        "a resource in a region that trains it",
        "UnsupportedModel": "this base model cannot be fine-tuned in this Azure region; pick another --model or "
        "a resource in a region that trains it",
    }
    supports_uploads = False

    def __init__(self, settings: Any, api_key: str, client: openai.OpenAI, *, management: httpx.Client | None,
                 ) -> None:
        super().__init__(settings, api_key, client)
        self.management = management

    @property
    def identity(self) -> str:
        return f"azure-{self.settings.azure_surface}:{self.client.base_url}"

    def upload_file(self, path: Path, filename: str, *, progress: UploadProgress) -> RemoteFile:
        if path.stat().st_size >= FILE_LIMIT_BYTES:
            raise ConfigError(f"{path} is {path.stat().st_size:,} bytes; Azure OpenAI takes files under 512 MB")
        return super().upload_file(path, filename, progress=progress)

    def _key_of(self, job: Any) -> str | None:
        """Only the key's tag is at the provider (`find_job` compares tags): in the suffix or the model name."""
        text = getattr(job, "suffix", None) or job.fine_tuned_model
        return tag_in(text) if text else None

    def _create_arguments(self, spec: JobSpec) -> dict[str, Any]:
        arguments = super()._create_arguments(spec)
        del arguments["metadata"]
        if spec.method == "supervised":  # the GA dated schema has top-level hyperparameters, no `method`
            del arguments["method"]
            arguments["hyperparameters"] = spec.hyperparameters
        arguments["suffix"] = tagged_suffix(spec.suffix, spec.key, SUFFIX_LIMIT)
        arguments["extra_body"] = {"trainingType": self.settings.azure_training_type}
        return arguments

    def list_jobs(self, key: str) -> list[RemoteJob]:
        return [self._job(job) for job in pages(self.client.fine_tuning.jobs.list(limit=100), max_pages=3)]

    def find_job(self, key: str, known_job_id: str | None = None) -> RemoteJob | None:
        job = super().find_job(key_tag(key), known_job_id)
        if job is not None:
            job.key = key
        return job

    # --- deployments (control plane) -------------------------------------------------------
    def deployment_url(self, name: str) -> str:
        s = self.settings
        missing = [n for n in ("azure_subscription_id", "azure_resource_group", "azure_account") if not getattr(s, n)]
        if missing:
            raise ConfigError(f"deploying on Azure needs the settings {', '.join(missing)}")
        return (f"/subscriptions/{s.azure_subscription_id}/resourceGroups/{s.azure_resource_group}/providers/"
                f"Microsoft.CognitiveServices/accounts/{s.azure_account}/deployments/{name}")

    def deploy_model(self, model: str, name: str) -> str:
        """PUT the deployment, wait until it succeeded and answers; returns the deployment name."""
        if self.management is None:
            raise ConfigError("deploying on Azure needs an ARM token: AZURE_MANAGEMENT_TOKEN or a Secret block")
        url = self.deployment_url(name)
        sku = {"name": self.settings.azure_deployment_sku, "capacity": self.settings.azure_deployment_capacity}
        body = {"sku": sku,
                "properties": {"model": {"format": "OpenAI", "name": model, "version": "1"}}}
        params = {"api-version": ARM_API_VERSION}
        response = self.management.put(url, params=params, json=body)
        if response.status_code >= 400:
            raise ProviderError(f"Azure refused deployment {name} of {model}: {response.status_code} {response.text}")
        deadline = time.monotonic() + self.settings.deploy_timeout_seconds
        while True:
            state = self.management.get(url, params=params).json().get("properties", {}).get("provisioningState")
            if state == "Succeeded" and self._answers(name):
                log.info("deployment %s of %s answers", name, model)
                return name
            if state in ("Failed", "Canceled"):
                raise ProviderError(f"Azure deployment {name} of {model} ended {state}")
            if time.monotonic() > deadline:
                raise ProviderError(f"Azure deployment {name} of {model} did not answer within "
                                    f"{self.settings.deploy_timeout_seconds:.0f}s (state {state})")
            time.sleep(self.settings.poll_initial_seconds)

    def remove_deployment(self, name: str) -> None:
        """DELETE the deployment (it is billed by the hour while it exists); one already gone is fine."""
        if self.management is None:
            raise ConfigError("removing an Azure deployment needs an ARM token: AZURE_MANAGEMENT_TOKEN")
        response = self.management.delete(self.deployment_url(name), params={"api-version": ARM_API_VERSION})
        if response.status_code >= 400 and response.status_code != 404:
            raise ProviderError(f"Azure refused to remove deployment {name}: {response.status_code} {response.text}")

    def refusal(self, exc: BaseException) -> ProviderRefused | None:
        """Azure answers a missing or wrong `trainingType` with a 400 that can read "the base model does not
        support fine-tuning" (litellm#24687): both mean the training type."""
        refused = super().refusal(exc)
        message = error_message(exc)
        if refused is None and status_code(exc) == 400 and (
                "trainingType" in message or "does not support fine-tuning" in message):
            return ProviderRefused(f"{self.refusals['trainingTypeRequired']} (provider said: {message})")
        return refused

    def served_as(self, model: str) -> str:
        """A base model answers through the deployment configured for the baseline."""
        base = ".ft-" not in model and not model.startswith("ft:")
        return self.settings.azure_baseline_deployment if base and self.settings.azure_baseline_deployment else model

    def _answers(self, name: str) -> bool:
        try:
            self.client.with_options(max_retries=0).chat.completions.create(
                model=name, messages=[{"role": "user", "content": "ping"}], max_tokens=1)
        except (openai.NotFoundError, openai.APIConnectionError, openai.InternalServerError):
            return False
        return True


def tag_in(name: str) -> str | None:
    """The key tag in a suffix or model name (`ft:gpt-4o-mini:org:ftflow-0123456789:id`), if any."""
    for part in reversed(name.replace(":", "-").replace(".", "-").split("-")):
        if len(part) == 10 and all(c in "0123456789abcdef" for c in part):
            return part
    return None
