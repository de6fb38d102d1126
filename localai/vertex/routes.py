"""Vertex AI under `/vertex/v1beta1/...` and Cloud Storage under `/gcs/...`, as Google's SDKs call them.

- `genai.Client(vertexai=True, project=..., location=..., credentials=Credentials(token=<key>),
  http_options=HttpOptions(base_url="http://host:port/vertex/"))`: tuning jobs (create, get,
  list with a `labels.<k>="<v>"` filter, `:cancel`) and `:generateContent` on a tuned model's
  endpoint or a base model (`publishers/google/models/<m>`).
- `storage.Client(project=..., credentials=Credentials(token=<key>))` with
  `STORAGE_EMULATOR_HOST=http://host:port/gcs`: buckets (create, get), objects (multipart and
  resumable upload, metadata, download by `alt=media` or `/download/...`, list, delete).

Both send the service key as an OAuth bearer token; a missing or wrong one is 401
UNAUTHENTICATED in Google's envelope. Route names (`vertex.tuning_jobs.create`,
`gcs.objects.insert`, ...) are the operations fault injection targets.
"""

from __future__ import annotations

import email.parser
import json
import re
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse, Response

from localai.dialect import Dialect
from localai.exceptions import APIError

from .exceptions import GoogleError, StorageError
from .models import VertexBackend

vertex = APIRouter(prefix="/vertex/v1beta1/projects/{project}/locations/{location}")
gcs = APIRouter(prefix="/gcs")
LABEL_TERM = re.compile(r'labels\.([a-z0-9_-]+)\s*=\s*"?([a-z0-9_-]*)"?')


def backend(request: Request) -> VertexBackend:
    return request.app.state.service.vertex


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


# --- Vertex AI ---------------------------------------------------------------------------------


@vertex.post("/tuningJobs", name="vertex.tuning_jobs.create")
def create_tuning_job(request: Request, project: str, location: str, body: dict[str, Any] = Body(...)) -> dict:
    return backend(request).create_tuning_job(project, location, body)


@vertex.get("/tuningJobs", name="vertex.tuning_jobs.list")
def list_tuning_jobs(request: Request, project: str, location: str, filter: str | None = None) -> dict:  # noqa: A002
    terms = dict(LABEL_TERM.findall(filter or ""))
    if filter and not terms:
        raise GoogleError(400, f"Unsupported filter: {filter}. This service filters on labels.<key>=\"<value>\".")
    return backend(request).list_tuning_jobs(project, location, terms)


@vertex.post("/tuningJobs/{job_id}:cancel", name="vertex.tuning_jobs.cancel")
def cancel_tuning_job(request: Request, project: str, location: str, job_id: str) -> dict:
    return backend(request).cancel_tuning_job(project, location, job_id)


@vertex.get("/tuningJobs/{job_id}", name="vertex.tuning_jobs.get")
def get_tuning_job(request: Request, project: str, location: str, job_id: str) -> dict:
    service = backend(request)
    return service.job_view(service.tuning_job(project, location, job_id))


@vertex.post("/endpoints/{endpoint}:generateContent", name="vertex.endpoints.generate_content")
def generate_on_endpoint(request: Request, project: str, location: str, endpoint: str,
                         body: dict[str, Any] = Body(...)) -> dict:
    return backend(request).generate_on_endpoint(project, location, endpoint, body)


@vertex.post("/publishers/google/models/{model}:generateContent", name="vertex.models.generate_content")
def generate_on_base(request: Request, project: str, location: str, model: str,
                     body: dict[str, Any] = Body(...)) -> dict:
    return backend(request).generate_on_base(model, body)


# --- Cloud Storage -----------------------------------------------------------------------------


@gcs.post("/storage/v1/b", name="gcs.buckets.insert")
def create_bucket(request: Request, project: str, body: dict[str, Any] = Body(...)) -> dict:
    return backend(request).create_bucket(project, body)


@gcs.get("/storage/v1/b/{bucket}", name="gcs.buckets.get")
def get_bucket(request: Request, bucket: str) -> dict:
    return backend(request).bucket(bucket)


@gcs.get("/storage/v1/b/{bucket}/o", name="gcs.objects.list")
def list_objects(request: Request, bucket: str, prefix: str | None = None) -> dict:
    return backend(request).list_objects(bucket, prefix, base_url(request))


def _media(service: VertexBackend, bucket: str, name: str) -> Response:
    content, record = service.object_content(bucket, name)
    return Response(content, media_type=record["contentType"], headers={
        "x-goog-hash": f"crc32c={record['crc32c']},md5={record['md5Hash']}",
        "x-goog-generation": record["generation"], "x-goog-stored-content-length": record["size"]})


@gcs.get("/storage/v1/b/{bucket}/o/{name:path}", name="gcs.objects.get")
def get_object(request: Request, bucket: str, name: str, alt: str | None = None) -> Any:
    service = backend(request)
    if alt == "media":
        return _media(service, bucket, name)
    return service.object_view(service.object(bucket, name), base_url(request))


@gcs.get("/download/storage/v1/b/{bucket}/o/{name:path}", name="gcs.objects.download")
def download_object(request: Request, bucket: str, name: str) -> Response:
    return _media(backend(request), bucket, name)


@gcs.delete("/storage/v1/b/{bucket}/o/{name:path}", name="gcs.objects.delete")
def delete_object(request: Request, bucket: str, name: str) -> Response:
    backend(request).delete_object(bucket, name)
    return Response(status_code=204)


@gcs.post("/upload/storage/v1/b/{bucket}/o", name="gcs.objects.insert")
async def upload_object(request: Request, bucket: str, uploadType: str, name: str | None = None) -> Any:  # noqa: N803
    service = backend(request)
    body = await request.body()
    if uploadType == "multipart":
        metadata, content = _multipart(request.headers.get("content-type", ""), body)
        return service.put_object(bucket, metadata.get("name") or name or "", content, metadata, base_url(request))
    if uploadType == "media":
        return service.put_object(bucket, name or "", body, {"contentType": request.headers.get("content-type")},
                                  base_url(request))
    if uploadType == "resumable":
        metadata = json.loads(body) if body.strip() else {}
        upload_id = service.start_resumable(bucket, name, metadata)
        location = f"{base_url(request)}/gcs/upload/storage/v1/b/{bucket}/o?uploadType=resumable&upload_id={upload_id}"
        return Response(status_code=200, headers={"Location": location})
    raise StorageError(400, f"Invalid uploadType: {uploadType}", reason="invalidParameter")


@gcs.put("/upload/storage/v1/b/{bucket}/o", name="gcs.objects.upload_chunk")
async def upload_chunk(request: Request, bucket: str, upload_id: str) -> Any:
    view, received = backend(request).resume(upload_id, request.headers.get("content-range"), await request.body(),
                                             base_url(request))
    if view is not None:
        return JSONResponse(view)
    headers = {"Range": f"bytes=0-{received - 1}"} if received else {}
    return Response(status_code=308, headers=headers)


def _multipart(content_type: str, body: bytes) -> tuple[dict[str, Any], bytes]:
    """(metadata, content) of a `multipart/related` upload: a JSON part, then the media part."""
    message = email.parser.BytesParser().parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    parts = message.get_payload() if message.is_multipart() else []
    if not isinstance(parts, list) or len(parts) != 2:
        raise StorageError(400, "A multipart upload has a metadata part and a media part.", reason="invalid")
    metadata = json.loads(parts[0].get_payload(decode=True) or b"{}")
    content = parts[1].get_payload(decode=True) or b""
    return metadata, content


# --- the dialects ------------------------------------------------------------------------------


class VertexDialect(Dialect):
    name = "vertex"
    prefixes = ("/vertex/",)
    error = GoogleError

    def routers(self) -> Sequence[APIRouter]:
        return [vertex]

    def unauthorized(self, token: str | None) -> APIError:
        return self.error(401, "Request had invalid authentication credentials. Expected OAuth 2 access token, "
                               "login cookie or other valid authentication credential. See "
                               "https://developers.google.com/identity/sign-in/web/devconsole-project.")

    def rate_limited(self, retry_after: float) -> APIError:
        return self.error(429, "Resource exhausted. Please try again later. Please refer to "
                               "https://cloud.google.com/vertex-ai/generative-ai/docs/error-code-429 for more details.")

    def server_error(self, status: int) -> APIError:
        return self.error(status, "Internal error encountered." if status == 500 else "The service is currently "
                                                                                        "unavailable.")

    def invalid(self, message: str, *, param: str | None = None, status: int = 400) -> APIError:
        return self.error(status, message)


class StorageDialect(VertexDialect):
    name = "gcs"
    prefixes = ("/gcs/",)
    error = StorageError

    def routers(self) -> Sequence[APIRouter]:
        return [gcs]

    def unauthorized(self, token: str | None) -> APIError:
        return StorageError(401, "Invalid Credentials", reason="authError")

    def rate_limited(self, retry_after: float) -> APIError:
        return StorageError(429, "The rate of change requests to the object is too high; slow down.",
                            reason="rateLimitExceeded")
