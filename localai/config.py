"""Service settings, from `FTFLOW_SERVICE_*` environment variables or arguments.

The home of the service's defaults. ftflow's one Settings object takes each field here (but the
key, a secret) as its `service_<name>` setting, so ftflow.toml and `ftflow config` cover them too,
and builds this object from its resolved settings (`Settings.service_config`) for the in-process
service and `ftflow service`; `python -m localai` reads the environment alone. Nothing of the
pipeline is imported here.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from localai.faults import FaultPlan


class ServiceConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FTFLOW_SERVICE_", extra="ignore")

    data_dir: Path = Field(Path(".ftflow/service"), description="SQLite state and file blobs.")
    api_key: str | None = Field(None, description="Bearer key clients must send; generated when unset.")
    seconds_per_1k_tokens: float = Field(0.01, ge=0, description="Simulated training speed.")
    tick_seconds: float = Field(0.1, gt=0, description="How often the scheduler advances jobs.")
    max_file_bytes: int = Field(512 * 1024 * 1024, gt=0, description="Largest file for POST /v1/files.")
    refusal: str | None = Field(None, description="If set, every job create is refused with this message.")
    daily_job_limit: int | None = Field(
        None, ge=0, description="Jobs allowed per model and 24 hours; more are refused with OpenAI's 429."
    )
    max_running_jobs: int | None = Field(
        None, ge=1, description="Jobs running at once; more wait in `queued` until one finishes."
    )
    faults: FaultPlan = Field(default_factory=FaultPlan, description="Fault injection plan (JSON).")
    instruction_following: float = Field(
        0.8, ge=0, le=1, description="How often a base model follows its system prompt's format and language."
    )
    openapi: bool = Field(False, description="Serve the service's own schema at /openapi.json (needs the key).")


def with_key(config: ServiceConfig) -> ServiceConfig:
    """The config with an API key: the configured one, or a fresh random one."""
    if config.api_key:
        return config
    return config.model_copy(update={"api_key": f"sk-local-{secrets.token_urlsafe(24)}"})
