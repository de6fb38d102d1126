"""The one client factory: every SDK client ftflow uses is built here; the only place keys are read.

- `local`: the bundled service. With `service_url` set (FTFLOW_SERVICE_URL), the client talks
  to that one, with the key in FTFLOW_SERVICE_API_KEY; otherwise a service is started on a free
  loopback port (once per process) with a fresh random key: on a thread of this process, or in a
  process of its own when much is to be screened (`expect_local_requests`).
- `openai`: OPENAI_API_KEY; the settings openai_base_url, openai_organization, openai_project (which the
  resolver also reads from OPENAI_BASE_URL, OPENAI_ORG_ID, OPENAI_PROJECT_ID).
- `azure`: AZURE_OPENAI_API_KEY, the endpoint (azure_endpoint, or AZURE_OPENAI_ENDPOINT); `AzureOpenAI`
  for the dated surface, `OpenAI(base_url={endpoint}/openai/v1/)` for v1; deployments on the
  control plane with AZURE_MANAGEMENT_TOKEN (an ARM bearer token) at `azure_management_url`.
- `together`: TOGETHER_API_KEY; the official `together` SDK for files and fine-tunes, and its
  OpenAI-compatible `/v1` for chat.
- `vertex`: Google's credentials, GOOGLE_OAUTH_ACCESS_TOKEN (a bearer token) else Application
  Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud); `google-genai` on Vertex AI
  (vertex_project, vertex_location, vertex_base_url) and `google-cloud-storage` (vertex_storage_url).
- `fireworks`: FIREWORKS_API_KEY; the official `fireworks-ai` SDK for datasets and jobs, and its
  OpenAI-compatible `/inference/v1` for chat.
- `bedrock`: a boto3 session from the AWS default credential chain or `bedrock_profile`; its
  clients (s3, bedrock, bedrock-runtime) are built by the provider, under `bedrock_endpoint_url`
  when that is set (the local service).

Keys come from the environment, or from a Prefect Secret block: FTFLOW_SECRET_BLOCK_PREFIX
(e.g. `ftflow-`) makes `TOGETHER_API_KEY` the block `ftflow-together-api-key`; the older
FTFLOW_API_KEY_BLOCK names one block for every key. Keys are never flow parameters, never
logged: `Provider.identity` names a backend without its key.
"""

from __future__ import annotations

import contextlib
import functools
import os
import ssl
import threading
from typing import Any

import openai

from ftflow.errors import ConfigError
from ftflow.settings import Settings

_local_lock = threading.Lock()
_local_service: Any = None  # localai's LocalService (a thread) or ServiceProcess
# Texts to moderate from which the local service's own process pays for its start (see
# expect_local_requests). The moderation stage, thread / process, on the 2-core machine: 2,600
# texts 0.80 / 0.85 s, 5,000 1.31 / 1.13 s, 10,000 2.40 / 2.17 s, 97,506 21.5 / 13.4 s; 20
# texts: the whole command about a second slower with the process (docs/moderation.md).
SERVICE_PROCESS_TEXTS = 5_000


def secret(env_name: str) -> str | None:
    """A key from the environment, else from a Prefect Secret block (see the module docstring)."""
    value = os.environ.get(env_name)
    if value:
        return value
    prefix = os.environ.get("FTFLOW_SECRET_BLOCK_PREFIX")
    block = f"{prefix}{env_name.lower().replace('_', '-')}" if prefix else os.environ.get("FTFLOW_API_KEY_BLOCK")
    if block:
        from prefect.blocks.system import Secret

        try:
            return Secret.load(block).get()
        except ValueError:
            return None
    return None


def local_service(settings: Settings) -> Any:
    """This process's local service, started on first use: on a thread of this process, unless
    `expect_local_requests` asked for a process of its own first."""
    global _local_service
    with _local_lock:
        if _local_service is None:
            from localai.server import LocalService

            _local_service = LocalService(settings.service_config()).start()
    return _local_service  # a ServiceProcess's base_url waits until it serves


def expect_local_requests(settings: Settings, texts: int) -> None:
    """The caller is about to send the local service `texts` texts to read (the moderation
    pre-check). From `SERVICE_PROCESS_TEXTS` up, a service not started yet starts in a process of
    its own (localai/process.py): its requests then use the machine's other core, not this
    interpreter. Below, a thread is cheaper: the process's start costs about a second of CPU
    (docs/moderation.md). Nothing changes for a service already started, or another backend."""
    global _local_service
    if settings.backend != "local" or settings.service_url or texts < SERVICE_PROCESS_TEXTS:
        return
    with _local_lock:
        if _local_service is None:
            from localai.process import ServiceProcess

            _local_service = ServiceProcess(settings.service_config())


def _required(env_name: str, why: str) -> str:
    value = secret(env_name)
    if not value:
        raise ConfigError(f"{why} needs {env_name} in the environment (or a Prefect Secret block)")
    return value


class _SdkHttpClient(openai.DefaultHttpxClient):
    """The SDK's own HTTP client (its defaults), closed when collected as the SDK closes the ones it
    builds; on the process's one TLS context."""

    def __init__(self) -> None:
        super().__init__(verify=_tls_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")))

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter exit, as the SDK's own
            self.close()


@functools.cache
def _tls_context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    """The context the SDK's client builds for itself (httpx2's default: the system's CAs, or
    SSL_CERT_FILE/SSL_CERT_DIR), once per process and per those two: each build loads the CA
    bundle again, about 20 ms of CPU, and a run builds a client for each provider it uses."""
    import httpx2

    return httpx2.create_ssl_context()


def openai_client(settings: Settings, *, max_retries: int = 2) -> tuple[openai.OpenAI, str]:
    """(client, key) of the OpenAI-dialect surface of `settings.backend` (local, openai or azure)."""
    sdk = openai.AzureOpenAI if settings.backend == "azure" and settings.azure_surface != "v1" else openai.OpenAI
    client, key = _openai_client_arguments(settings)
    return sdk(**client, max_retries=max_retries, timeout=settings.request_timeout_seconds,
               http_client=_SdkHttpClient()), key


def _openai_client_arguments(settings: Settings) -> tuple[dict[str, Any], str]:
    """(the SDK client's endpoint and credential arguments, key) of `settings.backend`."""
    if settings.backend == "local":
        if settings.service_url:
            key = _required("FTFLOW_SERVICE_API_KEY", "FTFLOW_SERVICE_URL")
            return {"base_url": settings.service_url, "api_key": key}, key
        service = local_service(settings)
        return {"base_url": service.base_url, "api_key": service.api_key}, service.api_key
    if settings.backend == "openai":
        key = _required("OPENAI_API_KEY", "backend openai")
        return {"api_key": key, "base_url": settings.openai_base_url, "organization": settings.openai_organization,
                "project": settings.openai_project}, key
    if settings.backend == "azure":
        key = _required("AZURE_OPENAI_API_KEY", "backend azure")
        endpoint = settings.azure_endpoint
        if not endpoint:
            raise ConfigError("backend azure needs an endpoint: azure_endpoint or AZURE_OPENAI_ENDPOINT")
        if settings.azure_surface == "v1":
            # Azure's v1 surface takes the key in `api-key`; the SDK's bearer header is accepted too.
            return {"base_url": f"{endpoint.rstrip('/')}/openai/v1/", "api_key": key,
                    "default_headers": {"api-key": key}}, key
        return {"api_key": key, "azure_endpoint": endpoint, "api_version": settings.azure_api_version}, key
    if settings.backend == "fireworks":
        key = _required("FIREWORKS_API_KEY", "backend fireworks")
        return {"base_url": f"{settings.fireworks_base_url.rstrip('/')}/inference/v1", "api_key": key}, key
    if settings.backend == "together":
        key = _required("TOGETHER_API_KEY", "backend together")
        return {"base_url": f"{together_base_url(settings)}/v1", "api_key": key}, key
    raise ConfigError(f"unknown backend {settings.backend!r}")


def together_base_url(settings: Settings) -> str:
    return settings.together_base_url.rstrip("/")


def together_client(settings: Settings) -> Any:
    """The official `together` SDK client (3.x adds `/v1` to the base URL itself)."""
    from together import Together

    return Together(api_key=_required("TOGETHER_API_KEY", "backend together"), base_url=together_base_url(settings),
                    max_retries=2, timeout=settings.request_timeout_seconds)


def fireworks_client(settings: Settings) -> tuple[Any, str]:
    """(the official `fireworks-ai` SDK client, key) for datasets and fine-tuning jobs."""
    from fireworks import Fireworks

    if not settings.fireworks_account:
        raise ConfigError("backend fireworks needs fireworks_account (or FIREWORKS_ACCOUNT_ID)")
    key = _required("FIREWORKS_API_KEY", "backend fireworks")
    return Fireworks(api_key=key, account_id=settings.fireworks_account, base_url=settings.fireworks_base_url,
                     max_retries=2, timeout=settings.request_timeout_seconds), key


def aws_session(settings: Settings) -> tuple[Any, str]:
    """(boto3 session, access key id) from the AWS default credential chain, or `bedrock_profile`."""
    import boto3
    from botocore.exceptions import ProfileNotFound

    try:
        session = boto3.Session(profile_name=settings.bedrock_profile, region_name=settings.bedrock_region)
    except ProfileNotFound as exc:
        raise ConfigError(f"backend bedrock: {exc}") from None
    credentials = session.get_credentials()
    if credentials is None:
        raise ConfigError("backend bedrock needs AWS credentials: the default chain (AWS_ACCESS_KEY_ID and "
                          "AWS_SECRET_ACCESS_KEY, ~/.aws, an instance role) or bedrock_profile")
    return session, credentials.access_key


def management_client(settings: Settings) -> Any | None:
    """An httpx client for Azure's control plane (ARM), or None without a token."""
    import httpx

    token = secret("AZURE_MANAGEMENT_TOKEN")
    if not token:
        return None
    return httpx.Client(base_url=settings.azure_management_url, headers={"Authorization": f"Bearer {token}"},
                        timeout=settings.request_timeout_seconds)


def google_credentials() -> tuple[Any, str]:
    """(credentials, what they are) for Vertex AI and Cloud Storage: a bearer token, else ADC."""
    import google.auth
    import google.oauth2.credentials
    from google.auth.exceptions import DefaultCredentialsError

    token = secret("GOOGLE_OAUTH_ACCESS_TOKEN")
    if token:
        return google.oauth2.credentials.Credentials(token=token), "GOOGLE_OAUTH_ACCESS_TOKEN"
    try:
        credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    except DefaultCredentialsError:
        raise ConfigError("backend vertex needs Google credentials: GOOGLE_OAUTH_ACCESS_TOKEN, or Application "
                          "Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud auth application-default "
                          "login)") from None
    return credentials, "application default credentials"


def vertex_clients(settings: Settings) -> tuple[Any, Any, str]:
    """(`google-genai` client on Vertex AI, `google-cloud-storage` client, what the credentials are)."""
    try:
        from google import genai
        from google.cloud import storage
        from google.genai import types
    except ImportError:
        raise ConfigError("backend vertex needs google-genai and google-cloud-storage: "
                          "pip install 'ftflow[vertex]'") from None
    if not settings.vertex_project:
        raise ConfigError("backend vertex needs a project: vertex_project or GOOGLE_CLOUD_PROJECT")
    credentials, kind = google_credentials()
    options = types.HttpOptions(base_url=settings.vertex_base_url,
                                timeout=int(settings.request_timeout_seconds * 1000))
    tuning = genai.Client(vertexai=True, project=settings.vertex_project, location=settings.vertex_location,
                          credentials=credentials, http_options=options)
    endpoint = {"api_endpoint": settings.vertex_storage_url} if settings.vertex_storage_url else None
    gcs = storage.Client(project=settings.vertex_project, credentials=credentials, client_options=endpoint)
    return tuning, gcs, kind
