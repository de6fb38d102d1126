"""Together AI's API under `/together/v1/...`, as the `together` SDK 3.x calls it.

`Together(base_url="http://host:port/together", api_key=...)`: the SDK adds `/v1/...` itself.
Bearer key. The signed upload URL (`/_together_upload/{file_id}?signature=...`) stands in for
Together's object storage: outside the API, no key, the signature is the permission.
Route names (`together.fine_tunes.create`, ...) are the operations fault injection targets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Body, Form, Query, Request
from fastapi.responses import Response

from localai.dialect import Dialect

from .exceptions import TogetherError, together_errors
from .models import TogetherBackend, model_limits

router = APIRouter(prefix="/together/v1")
storage = APIRouter(prefix="/_together_upload")


def together(request: Request) -> TogetherBackend:
    return request.app.state.service.together


# --- files -------------------------------------------------------------------------------------


@router.post("/files", name="together.files.create")
def announce_file(
    request: Request,
    purpose: str = Form(...),
    file_name: str = Form(...),
    file_type: str = Form("jsonl"),
    checksum: str = Form(...),
) -> Response:
    backend = together(request)
    record = backend.announce_file(file_name=file_name, purpose=purpose, file_type=file_type, checksum=checksum)
    signed = f"{storage.prefix}/{record['id']}?signature={backend.signature(record['id'])}"
    location = str(request.base_url).rstrip("/") + signed
    return Response(status_code=302, headers={"Location": location, "X-Together-File-Id": record["id"]})


@storage.put("/{file_id}", name="together.storage.put")
async def put_content(request: Request, file_id: str, signature: str = Query(...)) -> dict:
    together(request).put_content(file_id, signature, await request.body())
    return {}


@router.post("/files/{file_id}/preprocess", name="together.files.preprocess")
def preprocess(request: Request, file_id: str) -> dict:
    backend = together(request)
    record = backend.get_file(file_id)
    if not record.get("_core"):
        raise TogetherError(400, f"File {file_id} has no content yet: PUT it to its upload URL first.")
    return backend.file_view(record)


@router.get("/files", name="together.files.list")
def list_files(request: Request) -> dict:
    return together(request).list_files()


@router.get("/files/{file_id}", name="together.files.retrieve")
def retrieve_file(request: Request, file_id: str) -> dict:
    backend = together(request)
    return backend.file_view(backend.get_file(file_id))


@router.delete("/files/{file_id}", name="together.files.delete")
def delete_file(request: Request, file_id: str) -> dict:
    return together(request).delete_file(file_id)


@router.get("/files/{file_id}/content", name="together.files.content")
def file_content(request: Request, file_id: str) -> Response:
    return Response(together(request).file_content(file_id), media_type="application/octet-stream")


# --- fine-tunes --------------------------------------------------------------------------------


@router.get("/fine-tunes/models/limits", name="together.fine_tunes.model_limits")
def get_model_limits(request: Request, model_name: str) -> dict:
    return model_limits(model_name)


@router.post("/fine-tunes/estimate-price", name="together.fine_tunes.estimate_price")
def estimate_price(request: Request, body: dict[str, Any] = Body(...)) -> dict:
    return together(request).estimate_price(body)


@router.post("/fine-tunes", name="together.fine_tunes.create")
def create_job(request: Request, body: dict[str, Any] = Body(...)) -> dict:
    if not isinstance(body.get("training_file"), str):
        raise TogetherError(400, "training_file is required.", param="training_file")
    with together_errors():
        return together(request).create_job(body)


@router.get("/fine-tunes", name="together.fine_tunes.list")
def list_jobs(request: Request) -> dict:
    return together(request).list_jobs()


@router.get("/fine-tunes/{job_id}", name="together.fine_tunes.retrieve")
def retrieve_job(request: Request, job_id: str) -> dict:
    backend = together(request)
    return backend.job_view(backend.job(job_id))


@router.post("/fine-tunes/{job_id}/cancel", name="together.fine_tunes.cancel")
def cancel_job(request: Request, job_id: str) -> dict:
    with together_errors():
        return together(request).cancel(job_id)


@router.get("/fine-tunes/{job_id}/events", name="together.fine_tunes.events")
def list_events(request: Request, job_id: str) -> dict:
    return together(request).events(job_id)


# --- chat --------------------------------------------------------------------------------------


@router.post("/chat/completions", name="together.chat.completions.create")
def chat_completion(request: Request, body: dict[str, Any] = Body(...)) -> dict:
    with together_errors():
        return together(request).chat_completion(body)


class TogetherDialect(Dialect):
    name = "together"
    prefixes = ("/together/",)

    def routers(self) -> Sequence[APIRouter]:
        return [router, storage]

    def invalid(self, message: str, *, param: str | None = None, status: int = 400) -> TogetherError:
        return TogetherError(status, message, param=param)

    def rate_limited(self, retry_after: float) -> TogetherError:
        error = TogetherError(429, "Rate limit exceeded, please try again later.", code="rate_limit_exceeded")
        error.headers = {"retry-after": f"{retry_after:g}"}
        return error
