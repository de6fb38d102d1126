"""Azure OpenAI's data plane on two surfaces, one set of handlers.

- dated: `/openai/files?api-version=2024-10-21`, `/openai/fine_tuning/jobs?api-version=...`,
  chat at `/openai/deployments/{deployment}/chat/completions?api-version=...`
  (what `AzureOpenAI(azure_endpoint=..., api_version=...)` calls); creates answer 201;
- v1: `/openai/v1/files`, `/openai/v1/fine_tuning/jobs` (+ pause, resume), chat at
  `/openai/v1/chat/completions` with the deployment name as `model`
  (what `OpenAI(base_url=".../openai/v1/")` calls); no api-version.

Keys: the `api-key` header (what AzureOpenAI sends) or `Authorization: Bearer`. Route names
(`azure.files.create`, ...) are the operations fault injection targets, on both surfaces.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from localai.dialect import Dialect, Scope, bearer, header
from localai.exceptions import APIError

from .exceptions import AzureError, azure_errors, invalid
from .models import AzureBackend

API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")


def require_api_version(api_version: str | None = Query(None, alias="api-version")) -> None:
    if api_version is None:
        raise invalid("The api-version query parameter is required on this surface (e.g. api-version=2024-10-21).")
    if not API_VERSION.match(api_version):
        raise invalid(f"Unsupported api-version '{api_version}'; use a dated version such as 2024-10-21.")


dated = APIRouter(prefix="/openai", dependencies=[Depends(require_api_version)])
v1 = APIRouter(prefix="/openai/v1")


def azure(request: Request) -> AzureBackend:
    return request.app.state.service.azure


class CreateJob(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    model: str
    training_file: str
    validation_file: str | None = None
    hyperparameters: dict[str, Any] | None = None
    suffix: str | None = None
    seed: int | None = None
    metadata: dict[str, Any] | None = None
    method: dict[str, Any] | None = None
    training_type: Any = Field(None, alias="trainingType")


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[dict[str, Any]]


# --- handlers (shared by both surfaces) ---------------------------------------------------------


async def create_file(request: Request, file: UploadFile = File(...), purpose: str = Form(...)) -> dict:
    content = await file.read()
    with azure_errors():
        return azure(request).create_file(filename=file.filename or "upload.jsonl", purpose=purpose, content=content)


def list_files(request: Request, purpose: str | None = None) -> dict:
    return azure(request).list_files(purpose)


def retrieve_file(request: Request, file_id: str) -> dict:
    with azure_errors():
        return azure(request).retrieve_file(file_id)


def delete_file(request: Request, file_id: str) -> dict:
    with azure_errors():
        return azure(request).files.delete_file(file_id)


def file_content(request: Request, file_id: str) -> Response:
    with azure_errors():
        return Response(azure(request).file_content(file_id), media_type="application/octet-stream")


def job_handlers(*, v1_surface: bool) -> dict[str, Callable[..., Any]]:
    """The job operations, showing jobs as the surface does (the dated one has no metadata)."""

    def create_job(request: Request, body: CreateJob) -> dict:
        backend = azure(request)
        with azure_errors():
            job = backend.create_job(body.model_dump(by_alias=True), keep_metadata=v1_surface)
        return backend.job_view(job, v1=v1_surface)

    def list_jobs(request: Request, after: str | None = None, limit: int = 20) -> dict:
        backend = azure(request)
        metadata = {
            k[len("metadata[") : -1]: v
            for k, v in request.query_params.items()
            if v1_surface and k.startswith("metadata[") and k.endswith("]")
        }
        with azure_errors():
            page = backend.jobs.list_jobs(after=after, limit=limit, metadata=metadata or None)
        data = [backend.job_view(backend.jobs.get(j["id"]), v1=v1_surface) for j in page["data"]]
        return {"object": "list", "data": data, "has_more": page["has_more"]}

    def retrieve_job(request: Request, job_id: str) -> dict:
        backend = azure(request)
        with azure_errors():
            return backend.job_view(backend.jobs.get(job_id), v1=v1_surface)

    def cancel_job(request: Request, job_id: str) -> dict:
        backend = azure(request)
        with azure_errors():
            backend.jobs.cancel_job(job_id)
            return backend.job_view(backend.jobs.get(job_id), v1=v1_surface)

    def pause_job(request: Request, job_id: str) -> dict:
        backend = azure(request)
        with azure_errors():
            backend.jobs.pause_job(job_id)
            return backend.job_view(backend.jobs.get(job_id), v1=v1_surface)

    def resume_job(request: Request, job_id: str) -> dict:
        backend = azure(request)
        with azure_errors():
            backend.jobs.resume_job(job_id)
            return backend.job_view(backend.jobs.get(job_id), v1=v1_surface)

    return {
        "create": create_job,
        "list": list_jobs,
        "retrieve": retrieve_job,
        "cancel": cancel_job,
        "pause": pause_job,
        "resume": resume_job,
    }


def list_events(request: Request, job_id: str, after: str | None = None, limit: int = 20) -> dict:
    with azure_errors():
        return azure(request).jobs.list_events(job_id, after=after, limit=limit)


def list_checkpoints(request: Request, job_id: str, after: str | None = None, limit: int = 10) -> dict:
    with azure_errors():
        return azure(request).jobs.list_checkpoints(job_id, after=after, limit=limit)


def deployment_chat(request: Request, deployment: str, body: ChatRequest) -> dict:
    with azure_errors():
        return azure(request).chat_completion(deployment, body.model_dump())


def v1_chat(request: Request, body: ChatRequest) -> dict:
    if not body.model:
        raise invalid("model (the deployment name) is required.", "model")
    with azure_errors():
        return azure(request).chat_completion(body.model, body.model_dump())


def mount(router: APIRouter, *, v1_surface: bool) -> None:
    created = 200 if v1_surface else 201  # the dated spec answers 201 Created
    jobs = job_handlers(v1_surface=v1_surface)
    router.add_api_route("/files", create_file, methods=["POST"], name="azure.files.create", status_code=created)
    router.add_api_route("/files", list_files, methods=["GET"], name="azure.files.list")
    router.add_api_route("/files/{file_id}", retrieve_file, methods=["GET"], name="azure.files.retrieve")
    router.add_api_route("/files/{file_id}", delete_file, methods=["DELETE"], name="azure.files.delete")
    router.add_api_route("/files/{file_id}/content", file_content, methods=["GET"], name="azure.files.content")
    router.add_api_route(
        "/fine_tuning/jobs", jobs["create"], methods=["POST"], name="azure.fine_tuning.jobs.create", status_code=created
    )
    router.add_api_route("/fine_tuning/jobs", jobs["list"], methods=["GET"], name="azure.fine_tuning.jobs.list")
    router.add_api_route(
        "/fine_tuning/jobs/{job_id}", jobs["retrieve"], methods=["GET"], name="azure.fine_tuning.jobs.retrieve"
    )
    router.add_api_route(
        "/fine_tuning/jobs/{job_id}/cancel", jobs["cancel"], methods=["POST"], name="azure.fine_tuning.jobs.cancel"
    )
    router.add_api_route(
        "/fine_tuning/jobs/{job_id}/events", list_events, methods=["GET"], name="azure.fine_tuning.jobs.events"
    )
    router.add_api_route(
        "/fine_tuning/jobs/{job_id}/checkpoints",
        list_checkpoints,
        methods=["GET"],
        name="azure.fine_tuning.jobs.checkpoints",
    )
    if v1_surface:
        router.add_api_route(
            "/fine_tuning/jobs/{job_id}/pause", jobs["pause"], methods=["POST"], name="azure.fine_tuning.jobs.pause"
        )
        router.add_api_route(
            "/fine_tuning/jobs/{job_id}/resume", jobs["resume"], methods=["POST"], name="azure.fine_tuning.jobs.resume"
        )
        router.add_api_route("/chat/completions", v1_chat, methods=["POST"], name="azure.chat.completions.create")
    else:
        router.add_api_route(
            "/deployments/{deployment}/chat/completions",
            deployment_chat,
            methods=["POST"],
            name="azure.chat.completions.create",
        )


mount(v1, v1_surface=True)  # before the dated routes: /openai/v1/... is never a dated path
mount(dated, v1_surface=False)


class AzureDialect(Dialect):
    name = "azure"
    prefixes = ("/openai/",)

    def routers(self) -> Sequence[APIRouter]:
        return [v1, dated]

    def credential(self, scope: Scope) -> str | None:
        return header(scope, b"api-key") or bearer(scope)

    def unauthorized(self, token: str | None) -> APIError:
        # Azure's wording for a missing or wrong key.
        return AzureError(
            401,
            "unauthorized",
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key "
            "for an active subscription and use a correct regional API endpoint for your resource.",
        )

    def rate_limited(self, retry_after: float) -> APIError:
        return AzureError(
            429,
            "tooManyRequests",
            f"Requests to this Azure OpenAI resource have exceeded the rate limit. Please retry after "
            f"{retry_after:g} seconds.",
            headers={"retry-after": f"{retry_after:g}", "retry-after-ms": f"{retry_after * 1000:g}"},
        )

    def server_error(self, status: int) -> APIError:
        code = "serviceUnavailable" if status == 503 else "internalFailure"
        return AzureError(status, code, "The server had an error while processing your request.")

    def invalid(self, message: str, *, param: str | None = None, status: int = 400) -> APIError:
        code = {404: "notFound", 405: "notFound"}.get(status, "invalidPayload")
        return AzureError(status, code, "Resource not found" if status == 404 else message, target=param)
