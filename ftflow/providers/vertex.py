"""Vertex AI: Gemini supervised and preference tuning through `google-genai`; data in Cloud Storage.

Files: prepare's OpenAI chat JSONL is rendered in Gemini's format (ftflow/formats/gemini.py)
before upload (`rendered`), so the content address is the sha256 of the bytes Vertex reads:
`gs://<vertex_bucket>/ftflow-<sha256>.jsonl`, uploaded with `google-cloud-storage` (the bucket
is created in the project when missing). Cloud Storage does no processing: an object that
exists is usable. Jobs: `client.tunings` with Vertex's states (table in docs/providers.md).
Vertex takes no idempotency token: the key lives in the job's **labels**
(`ftflow-idempotency-key`) and in the ledger, and the lookup lists jobs filtered by that label
before any create. The tuned model answers `generate_content` on its endpoint; ftflow names it
`<base model>@projects/.../endpoints/...` (the job's `fine_tuned_model`), so the base model,
its prices and the baseline stay known from the name; the base model answers by its name.
Vertex reports the real billable token count of a finished job (`tuningDataStats`); training
loss lives in Vertex AI Experiments, not on the job, so the loss curve is left empty.
Credentials are Google's own (ftflow/client.py), never settings or parameters.
"""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ftflow.errors import ConfigError, ProviderRefused
from ftflow.exactly_once import Outcome
from ftflow.formats.gemini import render_jsonl, text_of
from ftflow.jsonl import write_whole
from ftflow.providers.base import (
    ChatReply,
    JobEvent,
    JobSpec,
    JobState,
    Provider,
    RemoteFile,
    RemoteJob,
    UploadProgress,
    error_message,
    is_transient,
    key_tag,
    status_code,
)

LABEL = "ftflow-idempotency-key"
JOB_STATES: dict[str, JobState] = {
    "JOB_STATE_UNSPECIFIED": "pending", "JOB_STATE_QUEUED": "pending", "JOB_STATE_PENDING": "pending",
    "JOB_STATE_RUNNING": "running", "JOB_STATE_PAUSED": "running", "JOB_STATE_UPDATING": "running",
    "JOB_STATE_CANCELLING": "running", "JOB_STATE_SUCCEEDED": "succeeded", "JOB_STATE_FAILED": "failed",
    "JOB_STATE_EXPIRED": "failed", "JOB_STATE_PARTIALLY_SUCCEEDED": "failed", "JOB_STATE_CANCELLED": "cancelled",
}
QUOTA_WORDS = "quota exceeded"  # Vertex's quota refusals; a bare 429 ("Resource exhausted") is a rate limit


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of a google-genai or google-api-core error (both keep it in `code`); 401 for a refused token."""
    from google.auth.exceptions import RefreshError

    if isinstance(exc, RefreshError):  # google-auth's answer to a 401 on a token it cannot refresh
        return 401
    return status_code(exc)


@dataclass(frozen=True)
class GeminiChat:
    """Chat through `generate_content`: a tuned model's endpoint, or a base model by its name."""

    client: Any
    name: str

    def ask(self, messages: list[dict[str, Any]], *, temperature: float = 0.0) -> ChatReply:
        from google.genai import types

        system = "\n".join(text_of(m.get("content")) for m in messages if m.get("role") in ("system", "developer"))
        contents = [types.Content(role="model" if m["role"] == "assistant" else "user",
                                  parts=[types.Part(text=text_of(m.get("content")))])
                    for m in messages if m.get("role") in ("user", "assistant")]
        reply = self.client.models.generate_content(
            model=self.name, contents=contents,
            config=types.GenerateContentConfig(temperature=temperature, system_instruction=system or None))
        usage = reply.usage_metadata
        return ChatReply(reply.text or "", (usage.prompt_token_count or 0) if usage else 0,
                         (usage.candidates_token_count or 0) if usage else 0)


class VertexProvider(Provider):
    backend = "vertex"
    key_home = f"the job's labels (`{LABEL}`) and the ledger; no idempotency token"
    refusals: ClassVar[dict[str, str]] = {
        "model": "Vertex AI cannot tune this base model; pick one its supervised-tuning page lists "
                 "(cloud.google.com/vertex-ai/generative-ai/docs/models/tune-models)",
        "permission": "Vertex AI refused the request for lack of permission: the credentials need "
                      "roles/aiplatform.user on the project (and the project Vertex AI enabled)",
        "credentials": "Google rejected the credentials",
    }

    def __init__(self, settings: Any, credentials: str, tuning: Any, gcs: Any) -> None:
        super().__init__(settings, credentials)  # what the credentials are, never a secret
        self.tuning = tuning
        self.gcs = gcs

    @property
    def identity(self) -> str:
        where = self.settings.vertex_base_url or "googleapis"
        return f"vertex:{self.settings.vertex_project}/{self.settings.vertex_location}@{where}"

    # --- files -----------------------------------------------------------------------------
    def rendered(self, path: Path) -> Path:
        """The file in Gemini's format (SFT or preference, from prepare's JSONL), under the work dir."""
        data = path.read_bytes()
        target = Path(self.settings.work_dir) / "vertex" / f"{hashlib.sha256(data).hexdigest()}.gemini.jsonl"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            write_whole(target, render_jsonl(data))
        return target

    def _bucket(self) -> Any:
        if not self.settings.vertex_bucket:
            raise ConfigError("backend vertex needs a Cloud Storage bucket for the training files: vertex_bucket")
        return self.gcs.bucket(self.settings.vertex_bucket)

    def _file(self, blob: Any) -> RemoteFile:
        return RemoteFile(id=f"gs://{blob.bucket.name}/{blob.name}", filename=blob.name, bytes=blob.size,
                          state="processed", provider_status="stored")

    def upload_file(self, path: Path, filename: str, *, progress: UploadProgress) -> RemoteFile:
        bucket = self._bucket()
        if self.gcs.lookup_bucket(bucket.name) is None:
            from google.api_core.exceptions import Conflict

            with contextlib.suppress(Conflict):  # made meanwhile (or by a create whose answer was lost)
                self.gcs.create_bucket(bucket.name, location=self.settings.vertex_location)
        blob = bucket.blob(filename)
        # retry=None: ftflow/exactly_once.py is the one retry layer of creates (the SDK's own would retry for 120 s)
        blob.upload_from_filename(str(path), content_type="application/jsonl", retry=None)
        return self._file(blob)

    def find_file(self, filename: str) -> RemoteFile | None:
        from google.api_core.exceptions import NotFound

        try:
            blob = self._bucket().get_blob(filename)
        except NotFound:  # no bucket yet
            return None
        return self._file(blob) if blob is not None else None

    def _blob(self, file_id: str) -> Any:
        bucket, _, name = file_id.removeprefix("gs://").partition("/")
        return self.gcs.bucket(bucket), name

    def get_file(self, file_id: str) -> RemoteFile | None:
        from google.api_core.exceptions import NotFound

        bucket, name = self._blob(file_id)
        try:
            blob = bucket.get_blob(name)
        except NotFound:
            return None
        return self._file(blob) if blob is not None else None

    def file_text(self, file_id: str) -> str:
        bucket, name = self._blob(file_id)
        return bucket.blob(name).download_as_text()

    # --- jobs ------------------------------------------------------------------------------
    def _job(self, job: Any) -> RemoteJob:
        state = job.state.value if job.state else "JOB_STATE_UNSPECIFIED"
        detail = job.tuning_job_state.value if getattr(job, "tuning_job_state", None) else None
        stats = job.tuning_data_stats
        counts = stats and (stats.supervised_tuning_data_stats or stats.preference_optimization_data_stats)
        spec = job.supervised_tuning_spec or job.preference_optimization_spec
        epochs = spec.hyper_parameters.epoch_count if spec and spec.hyper_parameters else None
        succeeded = state == "JOB_STATE_SUCCEEDED"
        ended = job.end_time and job.create_time
        return RemoteJob(
            id=job.name, state=JOB_STATES.get(state, "pending"),
            provider_status=f"{state} ({detail})" if detail else state, model=job.base_model,
            fine_tuned_model=f"{job.base_model}@{job.tuned_model.endpoint}" if succeeded and job.tuned_model else None,
            trained_tokens=int(counts.total_billable_token_count) if succeeded and counts and
            counts.total_billable_token_count is not None else None,
            hyperparameters={"n_epochs": int(epochs)} if epochs else {},
            error_code=str(job.error.code) if job.error and job.error.code is not None else None,
            error_message=job.error.message if job.error else None,
            key=(job.labels or {}).get(LABEL),
            duration_seconds=(job.end_time - job.create_time).total_seconds() if ended else None)

    def create_job(self, spec: JobSpec) -> RemoteJob:
        from google.genai import types
        from google.genai._common import ExperimentalWarning

        hyper = spec.hyperparameters
        numbers = {name: hyper[name] for name in ("n_epochs", "learning_rate_multiplier", "beta")
                   if isinstance(hyper.get(name), int | float) and not isinstance(hyper.get(name), bool)}
        config = types.CreateTuningJobConfig(
            method="PREFERENCE_TUNING" if spec.method == "dpo" else "SUPERVISED_FINE_TUNING",
            validation_dataset=types.TuningValidationDataset(gcs_uri=spec.validation_file)
            if spec.validation_file else None,
            epoch_count=int(numbers["n_epochs"]) if "n_epochs" in numbers else None,
            learning_rate_multiplier=numbers.get("learning_rate_multiplier"),
            beta=numbers.get("beta") if spec.method == "dpo" else None,
            tuned_model_display_name=f"{spec.suffix or 'ftflow'}-{key_tag(spec.key)}",
            labels={LABEL: spec.key})
        with warnings.catch_warnings():  # google-genai marks tuning "experimental" on every first call: noise in a run
            warnings.simplefilter("ignore", ExperimentalWarning)
            tuned = self.tuning.tunings.tune(base_model=spec.model,
                                             training_dataset=types.TuningDataset(gcs_uri=spec.training_file),
                                             config=config)
        return self._job(tuned)

    def list_jobs(self, key: str) -> list[RemoteJob]:
        from google.genai import types

        config = types.ListTuningJobsConfig(filter=f'labels.{LABEL}="{key}"') if key else None
        return [self._job(job) for job in self.tuning.tunings.list(config=config)]

    def get_job(self, job_id: str) -> RemoteJob | None:
        from google.genai import errors

        try:
            return self._job(self.tuning.tunings.get(name=job_id))
        except errors.ClientError as exc:
            if exc.code == 404:
                return None
            raise

    def list_events(self, job_id: str) -> Iterator[JobEvent]:
        return iter(())  # a tuning job has no event list; its state, error and statistics are on the job

    def cancel_job(self, job_id: str) -> None:
        self.tuning.tunings.cancel(name=job_id)

    # --- serving and errors ----------------------------------------------------------------
    def served_as(self, model: str) -> str:
        """A tuned model (`<base>@<endpoint>`) answers on its endpoint; a base model by its name."""
        return model.split("@", 1)[1] if "@projects/" in model else model

    def chat(self, name: str, *, max_retries: int = 5) -> GeminiChat:
        return GeminiChat(self.tuning, name)

    def chat_client(self) -> Any:
        raise ConfigError("the vertex backend has no OpenAI-compatible endpoint: its models answer generate_content")

    def is_quota_refusal(self, exc: BaseException) -> bool:
        return status_of(exc) == 429 and QUOTA_WORDS in error_message(exc).lower()

    def outcome(self, exc: BaseException) -> Outcome:
        status = status_of(exc)
        if self.is_quota_refusal(exc) or self.refusal(exc) is not None:
            return "permanent"
        if status is None:
            return "unknown" if is_transient(exc) else "permanent"
        if status == 429 or status == 408:
            return "not_done"
        return "unknown" if status >= 500 else "permanent"

    def refusal(self, exc: BaseException) -> ProviderRefused | None:
        status, message = status_of(exc), error_message(exc)
        if status == 401:
            return ProviderRefused(f"{self.refusals['credentials']} ({self._api_key}): {message}")
        if status == 403:
            return ProviderRefused(f"{self.refusals['permission']} (provider said: {message})")
        if status == 400 and "not supported for tuning" in message:
            return ProviderRefused(f"{self.refusals['model']} (provider said: {message})")
        return None
