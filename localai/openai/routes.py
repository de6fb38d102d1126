"""OpenAI's API under `/v1`, as the official `openai` SDK calls it: parse, call the account, return its wire object.

Bearer key, OpenAI's error envelope (the gateway's defaults, dialect.py). Each route's `name`
is the operation name fault injection targets (see faults.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, ConfigDict, TypeAdapter
from starlette.concurrency import run_in_threadpool

from localai.dialect import Dialect
from localai.engine.files import too_large
from localai.engine.validation import missing
from localai.multipart import receive_form

from .models import OpenAIBackend
from .uploads import MAX_PART_BYTES

router = APIRouter(prefix="/v1")


def openai(request: Request) -> OpenAIBackend:
    return request.app.state.service.openai


_DICT = TypeAdapter(dict)


def json_response(body: dict[str, Any]) -> Response:
    """`body` byte for byte as FastAPI answers a route annotated `-> dict` (pydantic's JSON serializer,
    `application/json`), without first validating a copy of it in a second worker-thread hop."""
    return Response(_DICT.dump_json(body), media_type="application/json")


class CreateUpload(BaseModel):
    filename: str
    purpose: str
    bytes: int
    mime_type: str


class CompleteUpload(BaseModel):
    part_ids: list[str]
    md5: str | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[dict[str, Any]]
    n: int | None = 1
    seed: int | None = None


# --- files ------------------------------------------------------------------------------------


async def streamed_file(request: Request, field: str, max_bytes: int) -> tuple[dict[str, str], str, Any]:
    """The form fields, file name and on-disk path of a multipart upload, streamed (see multipart.py)."""
    files = openai(request).files
    form = await receive_form(request, file_field=field, path=files.incoming_path(), max_bytes=max_bytes)
    if form.too_large:
        raise too_large(form.size, max_bytes, param=field)
    if form.path is None:
        raise missing(field)
    return form.fields, form.filename or "upload", form.path


@router.post("/files", name="files.create")
async def create_file(request: Request) -> dict:
    fields, filename, path = await streamed_file(request, "file", openai(request).files.max_file_bytes)
    if "purpose" not in fields:
        path.unlink(missing_ok=True)
        raise missing("purpose")
    create = openai(request).files.create_file
    return await run_in_threadpool(create, filename=filename, purpose=fields["purpose"], path=path)


@router.get("/files", name="files.list")
def list_files(
    request: Request,
    purpose: str | None = None,
    limit: int = Query(10000),
    after: str | None = None,
    order: str = "desc",
) -> dict:
    return openai(request).files.list_files(purpose=purpose, limit=limit, after=after, order=order)


@router.get("/files/{file_id}", name="files.retrieve")
def retrieve_file(request: Request, file_id: str) -> dict:
    return openai(request).files.retrieve_file(file_id)


@router.delete("/files/{file_id}", name="files.delete")
def delete_file(request: Request, file_id: str) -> dict:
    return openai(request).files.delete_file(file_id)


@router.get("/files/{file_id}/content", name="files.content")
def file_content(request: Request, file_id: str) -> FileResponse:
    return FileResponse(openai(request).files.content_path(file_id), media_type="application/octet-stream")


# --- uploads ----------------------------------------------------------------------------------


@router.post("/uploads", name="uploads.create")
def create_upload(request: Request, body: CreateUpload) -> dict:
    return openai(request).uploads.create_upload(**body.model_dump())


@router.post("/uploads/{upload_id}/parts", name="uploads.parts.create")
async def add_upload_part(request: Request, upload_id: str) -> dict:
    _, _, path = await streamed_file(request, "data", MAX_PART_BYTES)
    return await run_in_threadpool(openai(request).uploads.add_upload_part, upload_id, path)


@router.post("/uploads/{upload_id}/complete", name="uploads.complete")
def complete_upload(request: Request, upload_id: str, body: CompleteUpload) -> dict:
    return openai(request).uploads.complete_upload(upload_id, part_ids=body.part_ids, md5=body.md5)


@router.post("/uploads/{upload_id}/cancel", name="uploads.cancel")
def cancel_upload(request: Request, upload_id: str) -> dict:
    return openai(request).uploads.cancel_upload(upload_id)


# --- fine-tuning ------------------------------------------------------------------------------


@router.post("/fine_tuning/jobs", name="fine_tuning.jobs.create")
def create_job(request: Request, body: Any = Body(...)) -> dict:
    # The body is checked against the spec's schema by the engine (engine/validation.py), which
    # answers each bad field with its own `param`; dialect routers share that check.
    return openai(request).jobs.create_job(body)


@router.get("/fine_tuning/jobs", name="fine_tuning.jobs.list")
def list_jobs(request: Request, after: str | None = None, limit: int = 20) -> dict:
    # The SDK sends a metadata filter as metadata[key]=value query parameters.
    metadata = {
        k[len("metadata[") : -1]: v
        for k, v in request.query_params.items()
        if k.startswith("metadata[") and k.endswith("]")
    }
    return openai(request).jobs.list_jobs(after=after, limit=limit, metadata=metadata or None)


@router.get("/fine_tuning/jobs/{job_id}", name="fine_tuning.jobs.retrieve")
def retrieve_job(request: Request, job_id: str) -> dict:
    return openai(request).jobs.retrieve_job(job_id)


@router.post("/fine_tuning/jobs/{job_id}/cancel", name="fine_tuning.jobs.cancel")
def cancel_job(request: Request, job_id: str) -> dict:
    return openai(request).jobs.cancel_job(job_id)


@router.post("/fine_tuning/jobs/{job_id}/pause", name="fine_tuning.jobs.pause")
def pause_job(request: Request, job_id: str) -> dict:
    return openai(request).jobs.pause_job(job_id)


@router.post("/fine_tuning/jobs/{job_id}/resume", name="fine_tuning.jobs.resume")
def resume_job(request: Request, job_id: str) -> dict:
    return openai(request).jobs.resume_job(job_id)


@router.get("/fine_tuning/jobs/{job_id}/events", name="fine_tuning.jobs.events")
def list_events(request: Request, job_id: str, after: str | None = None, limit: int = 20) -> dict:
    return openai(request).jobs.list_events(job_id, after=after, limit=limit)


@router.get("/fine_tuning/jobs/{job_id}/checkpoints", name="fine_tuning.jobs.checkpoints")
def list_checkpoints(request: Request, job_id: str, after: str | None = None, limit: int = 10) -> dict:
    return openai(request).jobs.list_checkpoints(job_id, after=after, limit=limit)


# --- models and chat --------------------------------------------------------------------------


@router.get("/models", name="models.list")
def list_models(request: Request) -> dict:
    return openai(request).models.list_models()


@router.get("/models/{model:path}", name="models.retrieve")
def retrieve_model(request: Request, model: str) -> dict:
    return openai(request).models.retrieve_model(model)


@router.delete("/models/{model:path}", name="models.delete")
def delete_model(request: Request, model: str) -> dict:
    return openai(request).models.delete_model(model)


@router.post("/chat/completions", name="chat.completions.create")
def create_chat_completion(request: Request, body: ChatRequest) -> dict:
    return openai(request).chat.create_chat_completion(
        model=body.model, messages=body.messages, n=body.n or 1, seed=body.seed
    )


@router.post("/moderations", name="moderations.create")
def create_moderation(request: Request, body: Any = Body(...)) -> Response:
    # 13 categories, their scores and input types per text: FastAPI's validated copy of such an
    # answer cost more than classifying its texts (bench/moderation.py)
    return json_response(openai(request).moderations.create_moderation(body))


class OpenAIDialect(Dialect):
    name = "openai"
    prefixes = ("/v1/",)

    def routers(self) -> Sequence[APIRouter]:
        return [router]
