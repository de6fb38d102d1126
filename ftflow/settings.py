"""The one settings object: defaults < `ftflow.toml` < `FTFLOW_*` environment < CLI options.

The TOML file is `./ftflow.toml`, or the path in `FTFLOW_CONFIG`. `ftflow.example.toml`
documents every key. Secrets are not settings: API keys are read from the environment
by the client factory inside the tasks, so they never reach flow-run parameters.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_MODEL = "gpt-4o-mini-2024-07-18"

PiiMode = Literal["off", "report", "mask"]
SystemPromptMode = Literal["replace", "if-missing"]
Backend = Literal["local", "openai", "azure", "together"]
AzureSurface = Literal["v1", "dated"]
Method = Literal["supervised", "dpo"]


def config_path() -> Path:
    return Path(os.environ.get("FTFLOW_CONFIG", "ftflow.toml"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FTFLOW_", extra="ignore")

    # prepare
    method: Method = Field("supervised", description="supervised (chat examples) or dpo (preference pairs).")
    model: str = Field(DEFAULT_MODEL, description="Base model to fine-tune.")
    validation_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="Share of examples held out for validation.")
    pii: PiiMode = Field("mask", description="PII handling: off, report (count) or mask.")
    pii_regions: Annotated[list[str], NoDecode] = Field(
        ["DE", "AT", "CH", "GB", "US"],
        min_length=1,
        description="Regions (ISO 3166 codes) whose national phone formats PII detection knows.",
    )
    system_prompt: str | None = Field(None, description="System prompt to put in every example.")
    system_prompt_mode: SystemPromptMode = Field(
        "replace", description="replace: overwrite any system turn; if-missing: add only."
    )
    n_epochs: int | None = Field(None, ge=1, le=50, description="Epochs; None: OpenAI's rule.")
    max_cost_usd: float | None = Field(None, ge=0, description="Stop before upload above this.")
    min_train_examples: int = Field(10, ge=1, description="OpenAI's minimum is 10.")
    max_rejected_share: float = Field(
        0.25, ge=0, le=1, description="Quality gate: the largest share of records rejected."
    )
    drift_max_token_change: float = Field(
        0.5, ge=0, description="Drift gate: relative change of p50/p95 tokens per example vs the last success."
    )
    drift_max_role_mix_shift: float = Field(
        0.1, ge=0, le=1, description="Drift gate: total variation distance of the role mix vs the last success."
    )
    drift_max_pii_share_change: float = Field(
        0.1, ge=0, le=1, description="Drift gate: change of the share of examples with PII (absolute)."
    )
    drift_max_rejected_share_change: float = Field(
        0.1, ge=0, le=1, description="Drift gate: change of the rejected share of records (absolute)."
    )
    drift_max_duplicate_share_change: float = Field(
        0.1, ge=0, le=1, description="Drift gate: change of the duplicate share (absolute)."
    )
    batch_size: int = Field(2000, ge=1, description="Records per streamed batch.")
    max_record_bytes: int = Field(
        16 << 20, ge=1024, description="Longest record (line) read, in bytes; a longer one is rejected as too_long."
    )
    out_dir: Path = Field(Path(".ftflow/runs/latest"), description="Where prepare writes.")
    work_dir: Path = Field(
        Path(".ftflow/work"), description="Stored shard results (reused when unchanged); reachable by all workers."
    )
    shard_mb: int = Field(32, ge=1, description="Size of one shard of a JSONL or transcript file, in MiB.")
    workers: int | None = Field(None, ge=1, description="Processes preparing shards; None: all cores.")
    dask_address: str | None = Field(None, description="Dask scheduler (tcp://host:8786) to prepare shards on.")
    # preference data (method dpo)
    dpo_beta: float = Field(0.1, gt=0, le=2, description="DPO beta: how far training may move from the base model.")
    dpo_min_rating_margin: float = Field(
        1.0, ge=0, description="Rated answers: the best and worst rating must differ by at least this."
    )
    dpo_max_length_bias: float = Field(
        0.8, ge=0, le=1, description="Quality gate: the largest share of pairs whose preferred answer is the longer."
    )
    dpo_min_pairs: int = Field(10, ge=1, description="Quality gate: the fewest training pairs.")
    dpo_max_near_identical_share: float = Field(
        0.2, ge=0, le=1, description="Quality gate: the largest share of pairs whose two outputs barely differ."
    )

    # provider
    backend: Backend = Field("local", description="local (the bundled service), openai, azure or together.")
    service_url: str | None = Field(None, description="URL of a running local service; None: start one.")
    service_data_dir: Path = Field(Path(".ftflow/service"), description="State of the in-process service.")
    azure_endpoint: str | None = Field(None, description="Azure OpenAI endpoint (AZURE_OPENAI_ENDPOINT too).")
    azure_api_version: str = Field("2025-04-01-preview", description="Azure OpenAI API version (dated surface).")
    azure_surface: AzureSurface = Field("v1", description="Azure: v1 (/openai/v1/) or dated (?api-version=).")
    azure_training_type: str = Field("Standard", description="Azure trainingType: Standard, GlobalStandard, Developer.")
    azure_subscription_id: str | None = Field(None, description="Azure subscription of the resource (deployments).")
    azure_resource_group: str | None = Field(None, description="Azure resource group of the resource (deployments).")
    azure_account: str | None = Field(None, description="Azure OpenAI resource (account) name (deployments).")
    azure_deployment_sku: str = Field("standard", description="Deployment sku (standard, GlobalStandard, ...).")
    azure_deployment_capacity: int = Field(1, ge=1, description="Deployment capacity (thousands of tokens/minute).")
    azure_baseline_deployment: str | None = Field(None, description="Azure deployment of the base model (baseline).")
    azure_management_url: str = Field("https://management.azure.com", description="Azure control plane (ARM) URL.")
    deploy_timeout_seconds: float = Field(1800.0, gt=0, description="Wait at most this long for a deployment.")
    together_base_url: str | None = Field(None, description="Together API base URL without /v1 (TOGETHER_BASE_URL).")
    request_timeout_seconds: float = Field(60.0, gt=0, description="Timeout of one API request.")

    # fine-tuning
    suffix: str | None = Field("ftflow", description="Suffix of the fine-tuned model name.")
    upload_part_bytes: int = Field(64 * 1024 * 1024, gt=0, description="Files larger go through Uploads.")
    poll_initial_seconds: float = Field(2.0, gt=0, description="First polling interval.")
    poll_max_seconds: float = Field(120.0, gt=0, description="Longest polling interval (backoff cap).")
    poll_timeout_seconds: float = Field(6 * 3600, gt=0, description="Give up on a job after this long.")
    create_attempts: int = Field(4, ge=1, le=10, description="Create requests per upload or job at most.")
    lookup_deadline_seconds: float = Field(
        90.0, ge=0, description="After a lost create response, look for the object this long before creating again."
    )
    lease_seconds: float = Field(30.0, gt=0, description="Length of a create lease (renewed while held).")
    cancel_job_on_flow_cancel: bool = Field(True, description="Cancelling the flow run cancels the job.")
    # evaluation, promotion, economics
    baseline_system_prompt: str | None = Field(None, description="The full production prompt for the baseline.")
    eval_language: str = Field("de", description="Language the answers must be in (ISO 639-1).")
    eval_json_schema: Path | None = Field(None, description="JSON schema the answers must follow, if any.")
    eval_max_examples: int = Field(50, ge=1, description="Held-out examples to evaluate at most.")
    eval_concurrency: int = Field(4, ge=1, description="Parallel chat requests during evaluation.")
    promotion_min_improvement: float = Field(0.05, ge=0, description="F1 (dpo: win rate) to beat the baseline by.")
    promotion_max_regression: float = Field(0.02, ge=0, description="Largest drop allowed against the promoted model.")
    monthly_requests: int = Field(100_000, ge=0, description="Request volume for the cost case.")
    tokens_mismatch_tolerance: float = Field(0.05, ge=0, description="Flag estimated vs trained tokens beyond this.")
    registry_url: str = Field("sqlite:///.ftflow/registry.sqlite3", description="Ledger and lineage DB.")

    @field_validator("pii_regions", mode="before")
    @classmethod
    def _known_phone_regions(cls, regions: str | list[str]) -> list[str]:
        import phonenumbers

        if isinstance(regions, str):  # FTFLOW_PII_REGIONS=DE,AT,CH or ["DE", "AT", "CH"]
            regions = json.loads(regions) if regions.lstrip().startswith("[") else regions.split(",")
        regions = [str(r).strip().upper() for r in regions if str(r).strip()]
        unknown = sorted(set(regions) - phonenumbers.SUPPORTED_REGIONS)
        if unknown:
            raise ValueError(f"unknown phone region(s) {', '.join(unknown)}; use ISO 3166 codes such as DE, AT, CH")
        return regions

    @field_validator("out_dir")
    @classmethod
    def _out_dir_is_a_folder(cls, value: Path) -> Path:
        if value.exists() and not value.is_dir():
            raise ValueError(f"{value} is an existing file, not a folder")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_path())
        return (init_settings, env_settings, toml)


# Settings whose command-line option is not simply --<name-with-dashes>.
CLI_OPTIONS = {
    "out_dir": "--out",
    "baseline_system_prompt": "--baseline-prompt-file",
    "eval_json_schema": "--json-schema",
}


def describe_invalid(error: dict) -> str:
    """One validation error as one line: the option, its environment variable, what is wrong, the value."""
    name = str(error["loc"][0]) if error.get("loc") else "settings"
    option = CLI_OPTIONS.get(name, "--" + name.replace("_", "-"))
    message = error["msg"].removeprefix("Value error, ")
    shown = "" if error["type"] == "value_error" else f" (got {error.get('input')!r})"
    return f"{option} / FTFLOW_{name.upper()}: {message}{shown}"


def get_settings(**overrides: object) -> Settings:
    """Return settings with the given (non-None) overrides applied on top.

    Raises ConfigError with one line per bad setting, naming the option, instead of
    pydantic's multi-line report.
    """
    from ftflow.errors import ConfigError

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError("; ".join(describe_invalid(e) for e in exc.errors())) from None
    except ValueError as exc:  # an unreadable ftflow.toml
        raise ConfigError(f"{config_path()}: {exc}") from None


def read_prompt_file(path: str | Path | None) -> str | None:
    """A prompt kept in a file (the production prompt in data/production_prompt.txt), stripped."""
    if path is None:
        return None
    try:
        return Path(path).read_text("utf-8").strip()
    except OSError as exc:
        from ftflow.errors import ConfigError

        raise ConfigError(f"cannot read prompt file {path}: {exc.strerror}") from None
