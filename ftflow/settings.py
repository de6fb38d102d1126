"""The one settings object and its one resolver.

`get_settings(overrides)` is called once per top-level flow run (or by the command that starts it)
and layers: defaults < `ftflow.toml` (or the file in `FTFLOW_CONFIG`) < `FTFLOW_*` (and the providers'
own variables such as `AZURE_OPENAI_ENDPOINT`) < overrides, where an override is only what a
person gave: a CLI option typed, a deployment parameter set. Every default lives here; the
option dataclasses of the tasks derive from a resolved `Settings` (`TransformOptions.from_settings`,
...), and the local service's settings are the `service_*` keys, whose defaults its own sibling
object `localai.config.ServiceConfig` keeps (localai imports nothing of the pipeline).
Each resolved object knows where every value came from (`origins()`), for `ftflow config` and
for the run record. Secrets are not settings: API keys are read from the environment by the
client factory inside the tasks, so they never reach flow-run parameters.
"""

from __future__ import annotations

import copy
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, ValidationError, field_serializer, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from localai.config import ServiceConfig
from localai.faults import FaultPlan

DEFAULT_MODEL = "gpt-4o-mini-2024-07-18"

PiiMode = Literal["off", "report", "mask"]
ModerationMode = Literal["off", "report", "reject"]
SystemPromptMode = Literal["replace", "if-missing"]
Backend = Literal["local", "openai", "azure", "together", "vertex", "bedrock", "fireworks"]
AzureSurface = Literal["v1", "dated"]
Method = Literal["supervised", "dpo"]
Format = Literal["auto", "chat", "nested", "transcript", "table", "sql"]
PrefectServer = Literal["auto", "background", "temporary"]
Engine = Literal["fast", "reference"]


def _service(name: str) -> Any:
    """A `service_<name>` setting: the local service's own field (default, bounds, description)."""
    return copy.copy(ServiceConfig.model_fields[name])


def config_path() -> Path:
    return Path(os.environ.get("FTFLOW_CONFIG", "ftflow.toml"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FTFLOW_", extra="ignore")
    _origins: dict[str, str] = PrivateAttr(default_factory=dict)

    # prepare
    method: Method = Field("supervised", description="supervised (chat examples) or dpo (preference pairs).")
    model: str = Field(DEFAULT_MODEL, description="Base model to fine-tune.")
    validation_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="Share of examples held out for validation.")
    pii: PiiMode = Field("mask", description="PII handling: off, report (count) or mask.")
    moderation: ModerationMode | None = Field(
        None, description="Moderation pre-check of every example: off, report (count flagged examples per category) "
        "or reject (quarantine them as moderation:<category>); None: report where the backend has a moderation "
        "endpoint (OpenAI, local), else off."
    )
    moderation_batch_size: int = Field(32, ge=1, le=1000, description="Examples per moderation request.")
    moderation_concurrency: int = Field(4, ge=1, le=64, description="Moderation requests in flight at once.")
    pii_regions: Annotated[list[str], NoDecode] = Field(
        ["DE", "AT", "CH", "GB", "US"],
        min_length=1,
        description="Regions (ISO 3166 codes) whose national phone formats PII detection knows.",
    )
    format: Format = Field("auto", description="Input shape: auto, chat, nested, transcript, table or sql.")
    turns_key: str | None = Field(None, description="Nested JSON: key of the list of turns (None: detected).")
    role_key: str | None = Field(None, description="Nested JSON: key of a turn's role (None: detected).")
    content_key: str | None = Field(None, description="Nested JSON: key of a turn's text (None: detected).")
    text_key: str | None = Field(None, description="Key of a transcript string in JSON lines (None: detected).")
    speakers: dict[str, str] = Field({}, description="Transcripts: speaker PREFIX -> role, beside the known ones.")
    id_column: str = Field("conversation_id", description="Tables and SQL: conversation id column.")
    order_column: str = Field("turn", description="Tables and SQL: turn order column.")
    role_column: str = Field("role", description="Tables and SQL: role column.")
    content_column: str = Field("content", description="Tables and SQL: content column.")
    role_map: dict[str, str] = Field({}, description="Source role -> OpenAI role, beside the known ones.")
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
    max_record_depth: int = Field(
        64, ge=1, le=250,
        description="Deepest nesting of arrays and objects in a record; a deeper one is rejected as too_deep.",
    )
    max_decompressed_bytes: int = Field(
        8 << 30, ge=1 << 20,
        description="Most bytes read from one compressed (.gz) file; the rest is rejected as decompressed_too_large.",
    )
    out_dir: Path = Field(Path(".ftflow/runs/latest"), description="Where prepare writes.")
    work_dir: Path = Field(
        Path(".ftflow/work"), description="Stored shard results (reused when unchanged); reachable by all workers."
    )
    shard_mb: float = Field(32, gt=0, description="Size of one shard of a JSONL or transcript file, in MiB.")
    workers: int | None = Field(None, ge=1, description="Processes preparing shards; None: all cores.")
    engine: Engine = Field(
        "fast", description="How chat records are prepared: fast (the default) or reference (each stage's own "
        "function per record); both write the same bytes."
    )
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

    # orchestration
    prefect_server: PrefectServer = Field(
        "auto", description="Without PREFECT_API_URL: background starts a Prefect server on first use and leaves it "
        "for later commands (`ftflow server stop` ends it); temporary starts one per command and stops it at its end; "
        "auto reuses a running one, else is background in a terminal and temporary elsewhere (scripts, CI)."
    )

    # provider
    backend: Backend = Field(
        "local", description="local (the bundled service), openai, azure, together, vertex, bedrock or fireworks.")
    service_url: str | None = Field(None, description="URL of a running local service; None: start one.")
    service_data_dir: Path = _service("data_dir")
    service_seconds_per_1k_tokens: float = _service("seconds_per_1k_tokens")
    service_tick_seconds: float = _service("tick_seconds")
    service_max_file_bytes: int = _service("max_file_bytes")
    service_refusal: str | None = _service("refusal")
    service_daily_job_limit: int | None = _service("daily_job_limit")
    service_max_running_jobs: int | None = _service("max_running_jobs")
    service_faults: FaultPlan = _service("faults")
    service_instruction_following: float = _service("instruction_following")
    service_openapi: bool = _service("openapi")
    openai_base_url: str | None = Field(None, description="OpenAI API base URL (OPENAI_BASE_URL too).")
    openai_organization: str | None = Field(None, description="OpenAI organization (OPENAI_ORG_ID too).")
    openai_project: str | None = Field(None, description="OpenAI project (OPENAI_PROJECT_ID too).")
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
    keep_deployments: int = Field(
        2, ge=1, description="After a promotion decision, keep the deployments of this many last promoted models "
        "(the promoted one and the one before it); remove ftflow's other deployments (Azure bills each by the hour)."
    )
    together_base_url: str = Field(
        "https://api.together.xyz", description="Together API base URL without /v1 (TOGETHER_BASE_URL too)."
    )
    # bedrock
    bedrock_region: str = Field("us-east-1", description="AWS Region of Bedrock and the bucket (Nova: us-east-1).")
    bedrock_profile: str | None = Field(None, description="AWS profile to use; None: the AWS default credential chain.")
    bedrock_endpoint_url: str | None = Field(
        None, description="Root of an AWS stand-in serving /s3, /bedrock, /bedrock-runtime (the local service); "
        "None: AWS itself.")
    bedrock_bucket: str | None = Field(None, description="S3 bucket for Bedrock training data and outputs.")
    bedrock_prefix: str = Field("ftflow/", description="Key prefix of ftflow's objects in bedrock_bucket.")
    bedrock_role_arn: str | None = Field(None, description="IAM role Bedrock assumes to read and write the bucket.")
    # fireworks
    fireworks_base_url: str = Field(
        "https://api.fireworks.ai", description="Fireworks API base URL without /v1 (FIREWORKS_BASE_URL too).")
    fireworks_account: str | None = Field(None, description="Fireworks account id (FIREWORKS_ACCOUNT_ID too).")
    request_timeout_seconds: float = Field(60.0, gt=0, description="Timeout of one API request.")

    # vertex
    vertex_project: str | None = Field(None, description="Google Cloud project of Vertex AI tuning "
                                       "(GOOGLE_CLOUD_PROJECT too).")
    vertex_location: str = Field("us-central1", description="Vertex AI region (GOOGLE_CLOUD_LOCATION too).")
    vertex_bucket: str | None = Field(None, description="Cloud Storage bucket of the training files "
                                      "(created in the project when missing).")
    vertex_base_url: str | None = Field(None, description="Vertex AI API URL (the google-genai base_url); "
                                        "None: Google's regional endpoint.")
    vertex_storage_url: str | None = Field(None, description="Cloud Storage API URL; None: Google's "
                                           "(STORAGE_EMULATOR_HOST too).")

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
    lease_wait_seconds: float = Field(3600.0, gt=0, description="Wait at most this long for another run's lease.")
    backoff_seconds: float = Field(1.0, ge=0, description="First pause between two create attempts.")
    backoff_max_seconds: float = Field(30.0, ge=0, description="Longest pause between two create attempts.")
    lookup_interval_seconds: float = Field(2.0, gt=0, description="Pause between two looks for a lost object.")
    seed: int | None = Field(None, description="The job's random seed; None: the provider picks one.")
    cancel_job_on_flow_cancel: bool = Field(True, description="Cancelling the flow run cancels the job.")
    job_slots: int | None = Field(
        None, ge=1, description="Jobs ftflow runs at once per backend and account; None: the provider's documented "
        "limit (OpenAI and local 3, Azure 1 per resource, Together none)."
    )
    quota_wait_seconds: float = Field(
        86_400.0, ge=0, description="Wait out a provider's quota refusal (daily job limit) this long, then fail."
    )
    quota_retry_initial_seconds: float = Field(60.0, gt=0, description="First wait after a quota refusal.")
    quota_retry_max_seconds: float = Field(1800.0, gt=0, description="Longest wait between quota retries.")
    # evaluation, promotion, economics
    runs_dir: Path = Field(Path(".ftflow/runs"), description="Folder of retrain's run folders.")
    baseline_system_prompt: str | None = Field(None, description="The full production prompt for the baseline.")
    baseline_prompt_file: Path | None = Field(
        None, description="File holding the baseline prompt; wins over baseline_system_prompt of a lower origin."
    )
    eval_language: str = Field("de", description="Language the answers must be in (ISO 639-1).")
    eval_json_schema: Path | None = Field(None, description="JSON schema the answers must follow, if any.")
    eval_max_examples: int = Field(50, ge=1, description="Held-out examples to evaluate at most.")
    eval_concurrency: int = Field(4, ge=1, description="Parallel chat requests during evaluation.")
    eval_judge: bool = Field(False, description="Also have an LLM judge grade the fine-tuned answers (costs requests).")
    eval_judge_model: str | None = Field(None, description="The judge's chat model (default: the base model).")
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

    @field_serializer("registry_url", when_used="json")
    def _without_password(self, url: str) -> str:
        """As JSON (flow-run parameters, run records, `ftflow config`) the URL shows no password."""
        return redact_url(url)

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

    def origins(self) -> dict[str, str]:
        """Where each value came from: "default", the TOML file's path, "FTFLOW_X" (or a provider's
        variable), "override" (a flow's `overrides`) or the command-line option typed (`--model`)."""
        return dict(self._origins) or {name: "default" for name in type(self).model_fields}

    def effective(self) -> dict[str, dict[str, Any]]:
        """Every setting with its value (as JSON) and origin, then each secret as present/absent."""
        values = self.model_dump(mode="json")
        origins = self.origins()
        shown: dict[str, dict[str, Any]] = {
            name: {"value": values[name], "origin": origins.get(name, "default")} for name in type(self).model_fields}
        for name in SECRETS:  # a secret shows only whether its variable is set
            present = bool(os.environ.get(name))
            shown[name] = {"value": "present" if present else "absent", "origin": name if present else "-"}
        return shown

    @property
    def shard_bytes(self) -> int:
        return max(1, int(self.shard_mb * (1 << 20)))

    def service_config(self) -> ServiceConfig:
        """The local service's settings (its key, a secret, from FTFLOW_SERVICE_API_KEY as the service reads it)."""
        return ServiceConfig(**{name: getattr(self, f"service_{name}") for name in SERVICE_SETTINGS})


# The local service's own settings that are ftflow settings too, as service_<name>.
SERVICE_SETTINGS = tuple(name for name in ServiceConfig.model_fields if name != "api_key")
# Secrets: read where they are used, never settings; `ftflow config` and run records say only
# whether each is set.
SECRETS = ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "AZURE_MANAGEMENT_TOKEN", "TOGETHER_API_KEY",
           "FTFLOW_SERVICE_API_KEY", "GOOGLE_OAUTH_ACCESS_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS",
           "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "FIREWORKS_API_KEY")
# Settings the providers' SDKs also read from their own variables; FTFLOW_<KEY> wins over those.
PROVIDER_ENV = {"azure_endpoint": "AZURE_OPENAI_ENDPOINT", "together_base_url": "TOGETHER_BASE_URL",
                "fireworks_base_url": "FIREWORKS_BASE_URL", "fireworks_account": "FIREWORKS_ACCOUNT_ID",
                "openai_base_url": "OPENAI_BASE_URL", "openai_organization": "OPENAI_ORG_ID",
                "openai_project": "OPENAI_PROJECT_ID", "vertex_project": "GOOGLE_CLOUD_PROJECT",
                "vertex_location": "GOOGLE_CLOUD_LOCATION", "vertex_storage_url": "STORAGE_EMULATOR_HOST"}
# Settings whose command-line option is not simply --<name-with-dashes>.
CLI_OPTIONS = {
    "out_dir": "--out",
    "baseline_prompt_file": "--baseline-prompt-file",
    "eval_json_schema": "--json-schema",
    "service_data_dir": "--data-dir",
    "service_max_running_jobs": "--max-running-jobs",
    "service_daily_job_limit": "--daily-job-limit",
}
RANK = {"default": 0, "toml": 1, "env": 2, "override": 3}


def option_of(name: str) -> str:
    """The command-line option of a setting."""
    return CLI_OPTIONS.get(name, "--" + name.replace("_", "-"))


# A SQLite file URL of plain characters (the default registry_url is one): it holds no password,
# and SQLAlchemy renders it exactly as given (tests/unit/test_settings.py compares the two).
_PLAIN_SQLITE_URL = re.compile(r"sqlite(\+[a-z]+)?://(/[A-Za-z0-9_./-]*)?")


def redact_url(url: str) -> str:
    """A database URL without its password (`redact_url_reference`, without importing SQLAlchemy
    for a plain SQLite URL: a flow run's parameters are serialised with it before its first task)."""
    if _PLAIN_SQLITE_URL.fullmatch(url):
        return url
    return redact_url_reference(url)


def redact_url_reference(url: str) -> str:
    """A database URL without its password, as SQLAlchemy renders it."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads: shown as given, it holds no password field
        return url


def _env_name(name: str) -> str | None:
    """The environment variable that sets `name`, if one is set: FTFLOW_<NAME> (any case), else a provider's."""
    wanted = f"FTFLOW_{name}".upper()
    for variable in os.environ:
        if variable.upper() == wanted:
            return variable
    provider = PROVIDER_ENV.get(name)
    return provider if provider and os.environ.get(provider) else None


def _read_toml(path: Path) -> dict[str, Any]:
    from ftflow.errors import ConfigError

    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    unknown = sorted(set(data) - set(Settings.model_fields))
    if unknown:
        raise ConfigError(f"{path}: unknown setting {', '.join(unknown)} (ftflow.example.toml lists every key)")
    return data


def describe_invalid(error: dict, origins: dict[str, str]) -> str:
    """One validation error: the key, where its value came from, what is wrong, the value."""
    name = str(error["loc"][0]) if error.get("loc") else "settings"
    origin = origins.get(name, "default")
    message = error["msg"].removeprefix("Value error, ")
    shown = "" if error["type"] == "value_error" else f" (got {error.get('input')!r})"
    return f"{name} (from {origin}): {message}{shown}"


def get_settings(overrides: dict[str, Any] | None = None, /, **options: Any) -> Settings:
    """The one resolver: defaults < ftflow.toml < FTFLOW_* (and the providers' variables) < overrides.

    Overrides are what a person gave: a dict (a deployment's or a direct call's `overrides`
    parameter; origin "override") or keywords (the options a command was typed with; origin
    the option, `--model`). None means not given. `baseline_prompt_file`
    is read into `baseline_system_prompt` when it comes from the same or a higher layer.
    Raises ConfigError with one line naming the bad key and its origin.
    """
    from ftflow.errors import ConfigError

    typed = {k: v for k, v in options.items() if v is not None}
    given = {**{k: v for k, v in (overrides or {}).items() if v is not None}, **typed}
    unknown = sorted(set(given) - set(Settings.model_fields))
    if unknown:
        raise ConfigError(f"unknown setting {', '.join(unknown)} (override); `ftflow config` lists every key")
    path = config_path()
    toml = _read_toml(path)
    origins: dict[str, str] = {}
    layers: dict[str, str] = {}
    provider: dict[str, Any] = {}
    for name in Settings.model_fields:
        env = _env_name(name)
        if name in typed:
            origins[name], layers[name] = option_of(name), "override"
        elif name in given:
            origins[name], layers[name] = "override", "override"
        elif env:
            origins[name], layers[name] = env, "env"
            if env == PROVIDER_ENV.get(name):
                provider[name] = os.environ[env]
        elif name in toml:
            origins[name], layers[name] = str(path.resolve()), "toml"
        else:
            origins[name], layers[name] = "default", "default"
    try:
        settings = Settings(**{**provider, **given})
    except ValidationError as exc:
        raise ConfigError("; ".join(describe_invalid(e, origins) for e in exc.errors())) from None
    except ValueError as exc:  # FTFLOW_<KEY> holding JSON that does not parse
        field = re.search(r'field "(\w+)"', str(exc))
        name = field.group(1) if field else "settings"
        raise ConfigError(f"{name} (from {origins.get(name, 'the environment')}): not valid JSON") from None
    if settings.baseline_prompt_file and RANK[layers["baseline_prompt_file"]] >= RANK[layers["baseline_system_prompt"]]:
        settings.baseline_system_prompt = read_prompt_file(settings.baseline_prompt_file)
        origins["baseline_system_prompt"] = f"{origins['baseline_prompt_file']} (baseline_prompt_file)"
    settings._origins = origins
    return settings


def settings_of_parameters(parameters: dict[str, Any]) -> Settings:
    """The settings a flow run ran with, from its stored parameters (a hook after the run, say):
    the resolved settings it was handed (the registry URL, stored without its password, resolved
    again), else its overrides resolved again."""
    resolved = get_settings(parameters.get("overrides"))
    if parameters.get("settings"):
        return Settings.model_validate({**parameters["settings"], "registry_url": resolved.registry_url})
    return resolved


def default(name: str) -> Any:
    """The default of a setting: how the tasks' option dataclasses take their defaults from Settings."""
    value = Settings.model_fields[name].get_default(call_default_factory=True)
    return tuple(value) if isinstance(value, list) else value


def read_prompt_file(path: str | Path | None) -> str | None:
    """A prompt kept in a file (the production prompt in data/production_prompt.txt), stripped."""
    if path is None:
        return None
    try:
        return Path(path).read_text("utf-8").strip()
    except OSError as exc:
        from ftflow.errors import ConfigError

        raise ConfigError(f"cannot read prompt file {path}: {exc.strerror}") from None
