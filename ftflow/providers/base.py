"""The provider seam: what ftflow needs from a fine-tuning provider, in ftflow's own terms.

Each implementation maps its provider's file and job states onto ftflow's lifecycle
(docs/providers.md has the table) and says where it keeps the idempotency key:

    ftflow job state   pending -> running -> succeeded | failed | cancelled
    ftflow file state  pending -> processed | error   (deleted: gone)

Errors are classified here too: `outcome(exc)` tells ftflow/exactly_once.py whether a failed
create surely did nothing (`not_done`, e.g. 429), may have been carried out (`unknown`, 5xx
and dropped connections) or must not be retried (`permanent`); `refusal(exc)` turns a
provider's "no" (bad key, fine-tuning not allowed, quota, unsupported model) into one line.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import openai

from ftflow.errors import ProviderRefused
from ftflow.exactly_once import Outcome

JobState = Literal["pending", "running", "succeeded", "failed", "cancelled"]
FileState = Literal["pending", "processed", "error", "deleted"]
LIVE: tuple[JobState, ...] = ("pending", "running", "succeeded")
RUNNING: tuple[JobState, ...] = ("pending", "running")
KEY_FIELD = "ftflow_idempotency_key"
PURPOSE = "fine-tune"


def provider_filename(sha256: str) -> str:
    """The content-addressed name a file has at every provider."""
    return f"ftflow-{sha256}.jsonl"


def mask_key(key: str) -> str:
    """`sk-***abcd`: enough to tell keys apart, never enough to use one."""
    return f"{'sk-' if key.startswith('sk-') else ''}***{key[-4:]}"


def key_tag(key: str) -> str:
    """The short form of an idempotency key that fits into a model-name suffix."""
    return key[:10]


def tagged_suffix(suffix: str | None, key: str, limit: int) -> str:
    """`<suffix>-<key tag>` within the provider's suffix limit (the user's part is shortened)."""
    tag = key_tag(key)
    room = limit - len(tag) - 1
    return f"{(suffix or 'ftflow')[:room].rstrip('-.')}-{tag}"


@dataclass
class RemoteFile:
    id: str
    filename: str | None
    bytes: int | None
    state: FileState
    provider_status: str
    detail: str | None = None


@dataclass
class RemoteJob:
    id: str
    state: JobState
    provider_status: str
    model: str | None = None
    fine_tuned_model: str | None = None
    trained_tokens: int | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    result_files: list[str] = field(default_factory=list)
    error_code: str | None = None
    error_message: str | None = None
    error_param: str | None = None
    key: str | None = None  # as far as the provider records it (metadata or suffix tag)
    duration_seconds: float | None = None  # from creation to the end, where the provider says


@dataclass
class JobEvent:
    id: str
    message: str
    type: str | None = None
    data: dict[str, Any] | None = None


def idempotency_key(*, dataset_sha256: str, model: str, method: str, hyperparameters: dict[str, Any],
                    suffix: str | None, generation: int = 0) -> str:
    """A stable key of what the job trains; generation n > 0 is the n-th `--force` retraining.

    Ledgers and providers hold these keys: the material and the hashing must never change.
    """
    material = json.dumps(
        {"dataset": dataset_sha256, "model": model, "method": method, "hyperparameters": hyperparameters,
         "suffix": suffix}, sort_keys=True)
    family = hashlib.sha256(material.encode()).hexdigest()[:40]
    return family if generation == 0 else hashlib.sha256(f"{family}:{generation}".encode()).hexdigest()[:40]


@dataclass(frozen=True)
class JobSpec:
    """What to train, without provider specifics, and its idempotency key (`key`).

    The key covers the dataset sha256, base model, method, hyperparameters and suffix (not the
    file ids, which name the same bytes, nor the seed) and the generation: 0, or the n-th
    `--force` retraining of the same data and settings (tasks/jobs.py picks it).
    """

    model: str
    training_file: str
    validation_file: str | None
    dataset_sha256: str
    suffix: str | None = None
    method: str = "supervised"
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    generation: int = 0

    def key_of(self, generation: int) -> str:
        """The key of this spec at another generation."""
        return idempotency_key(dataset_sha256=self.dataset_sha256, model=self.model, method=self.method,
                               hyperparameters=self.hyperparameters, suffix=self.suffix, generation=generation)

    @property
    def family(self) -> str:
        """The key of generation 0: same data, model and settings."""
        return self.key_of(0)

    @property
    def key(self) -> str:
        return self.key_of(self.generation)


@dataclass(frozen=True)
class ChatReply:
    """One answer and the tokens it took, whatever the provider's wire format."""

    text: str
    prompt_tokens: int
    completion_tokens: int


class ChatModel(Protocol):
    """A model to chat with where it lives; `name` is what the provider calls it (a deployment, an id)."""

    name: str

    def ask(self, messages: list[dict[str, Any]], *, temperature: float = 0.0) -> ChatReply: ...


@dataclass(frozen=True)
class OpenAIChat:
    """Chat through an OpenAI-SDK client: OpenAI, Azure, Together's and the local service's chat completions."""

    client: openai.OpenAI
    name: str

    def ask(self, messages: list[dict[str, Any]], *, temperature: float = 0.0) -> ChatReply:
        reply = self.client.chat.completions.create(model=self.name, temperature=temperature, messages=messages)
        return ChatReply(reply.choices[0].message.content or "", reply.usage.prompt_tokens,
                         reply.usage.completion_tokens)


class UploadProgress(Protocol):
    """Where a multi-part upload keeps the parts already accepted (the registry)."""

    def load(self) -> dict[str, Any] | None: ...
    def save(self, *, upload_id: str, part_bytes: int, part_ids: list[str], expires_at: float) -> None: ...
    def drop(self) -> None: ...


def status_code(exc: BaseException) -> int | None:
    """The HTTP status of an SDK error: `status_code` (openai, together), else an int `code` (google-genai,
    google-api-core)."""
    code = getattr(exc, "status_code", None)
    if not isinstance(code, int):
        code = getattr(exc, "code", None)
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def error_code(exc: BaseException) -> str | None:
    """The provider's error code from an SDK exception (`code`, or the body's error.code)."""
    code = getattr(exc, "code", None)
    if isinstance(code, str):
        return code
    if isinstance(status := getattr(exc, "status", None), str):  # google-genai: the canonical code
        return status
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("code"), str):
            return inner["code"]
    return None


def error_message(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc)
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            message = inner["message"]
    return message


def retry_after_seconds(exc: BaseException) -> float | None:
    """The seconds a refusal's `Retry-After` header asks for, if it has one in seconds."""
    response = getattr(exc, "response", None)
    value = getattr(response, "headers", {}).get("retry-after") if response is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: the caller's own backoff applies


def is_connection_error(exc: BaseException) -> bool:
    """A request that got no answer (timeouts included), whatever SDK raised it."""
    import httpx

    if isinstance(exc, openai.APIConnectionError | httpx.TransportError):
        return True
    return any(cls.__name__ in ("APIConnectionError", "APITimeoutError", "Timeout", "ServiceUnavailableError",
                                "ConnectionError", "ChunkedEncodingError", "TransportError")
               for cls in type(exc).__mro__)


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: rate limits, server errors, timeouts, dropped connections."""
    code = status_code(exc)
    if code is not None:
        return code in (408, 409, 429) or code >= 500
    return is_connection_error(exc)


def retry_on_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry_condition_fn for reads: retry 429/5xx/timeouts, never a 4xx or a refusal."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - the state's exception is what we classify
        return is_transient(exc)
    return False


class Provider(ABC):
    """One fine-tuning provider. `identity` names it in the ledger (backend and URL, no key)."""

    backend: ClassVar[str]
    #: Where this provider keeps a job's idempotency key (docs/providers.md).
    key_home: ClassVar[str]
    #: Provider error codes that mean "no, and retrying will not change it" -> one line each.
    refusals: ClassVar[dict[str, str]] = {}
    #: Provider error codes of a quota that frees up with time (a daily job limit): waited out
    #: with backoff until `quota_wait_seconds` (tasks/jobs.py), then the provider's words.
    quota_codes: ClassVar[frozenset[str]] = frozenset()
    #: Jobs the provider runs at once per account, as it documents; None: no documented limit.
    job_slots: ClassVar[int | None] = None
    #: The model of the provider's moderation endpoint (tasks/moderation.py); None: it has none.
    moderation_model: ClassVar[str | None] = None

    def __init__(self, settings: Any, api_key: str) -> None:
        self.settings = settings
        self._api_key = api_key

    @property
    @abstractmethod
    def identity(self) -> str: ...

    # --- files -----------------------------------------------------------------------------
    def rendered(self, path: Path) -> Path:
        """The file to upload for one of prepare's JSONL files: itself, or its rendering in the provider's
        format (deterministic, so its sha256 is the content address)."""
        return path

    @abstractmethod
    def upload_file(self, path: Path, filename: str, *, progress: UploadProgress) -> RemoteFile:
        """Send the file's bytes (one request, or resumable parts); returns the new file."""

    @abstractmethod
    def find_file(self, filename: str) -> RemoteFile | None:
        """A usable file of this (content-addressed) name, if the provider has one."""

    @abstractmethod
    def get_file(self, file_id: str) -> RemoteFile | None: ...

    @abstractmethod
    def file_text(self, file_id: str) -> str:
        """The content of a (result) file."""

    # --- jobs ------------------------------------------------------------------------------
    @abstractmethod
    def create_job(self, spec: JobSpec) -> RemoteJob: ...

    @abstractmethod
    def list_jobs(self, key: str) -> list[RemoteJob]:
        """Jobs that may carry this key (the provider's list, filtered where it can)."""

    @abstractmethod
    def get_job(self, job_id: str) -> RemoteJob | None: ...

    @abstractmethod
    def list_events(self, job_id: str) -> Iterator[JobEvent]:
        """The job's events, newest first (lazily: callers stop at the last one they saw)."""

    @abstractmethod
    def cancel_job(self, job_id: str) -> None: ...

    def find_job(self, key: str, known_job_id: str | None = None) -> RemoteJob | None:
        """The live job (pending, running or succeeded) with this key: the ledger's id first, then the list."""
        if known_job_id and (job := self.get_job(known_job_id)) is not None and job.state in LIVE:
            return job
        for job in self.list_jobs(key):
            if job.key == key and job.state in LIVE:
                return job
        return None

    # --- serving ---------------------------------------------------------------------------
    def deploy_model(self, model: str, name: str) -> str:
        """Make a fine-tuned model answer; returns the name to chat with. No-op by default."""
        return model

    def remove_deployment(self, name: str) -> None:
        """Remove a deployment `deploy_model` made; only providers whose models need one make any."""
        raise NotImplementedError(f"the {self.backend} backend makes no deployments (asked to remove {name})")

    def served_as(self, model: str) -> str:
        """The name to chat with a model that has no recorded deployment."""
        return model

    @abstractmethod
    def chat_client(self) -> openai.OpenAI:
        """An OpenAI-SDK client for chat completions with this provider's models."""

    def chat(self, name: str, *, max_retries: int = 5) -> ChatModel:
        """The model called `name` here, to ask held-out examples (evaluation, snapshots, the judge).
        Providers whose models answer another API than chat completions override this."""
        return OpenAIChat(self.chat_client().with_options(max_retries=max_retries), name)

    # --- errors ----------------------------------------------------------------------------
    def is_quota_refusal(self, exc: BaseException) -> bool:
        return error_code(exc) in self.quota_codes

    def outcome(self, exc: BaseException) -> Outcome:
        if self.is_quota_refusal(exc) or self.refusal(exc) is not None or not is_transient(exc):
            return "permanent"
        code = status_code(exc)
        return "unknown" if code is None or code >= 500 else "not_done"

    def refusal(self, exc: BaseException) -> ProviderRefused | None:
        code, status = error_code(exc), status_code(exc)
        if status == 401:
            return ProviderRefused(f"the provider rejected the API key ({mask_key(self._api_key)})")
        if code in self.refusals:
            return ProviderRefused(f"{self.refusals[code]} (provider said: {error_message(exc)})")
        if status == 403:
            return ProviderRefused(f"the provider refused the request (403): {error_message(exc)}")
        return None

    @contextmanager
    def explained(self) -> Iterator[None]:
        """Turn a provider refusal anywhere in the block into one ProviderRefused line."""
        try:
            yield
        except ProviderRefused:
            raise
        except Exception as exc:
            if (refused := self.refusal(exc)) is not None:
                raise refused from None
            raise

