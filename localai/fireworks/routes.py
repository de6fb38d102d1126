"""Fireworks' API as the `fireworks-ai` SDK 1.x calls it with `base_url="http://host:port/fireworks"`.

Control plane under `/fireworks/v1/accounts/{account}/...` (custom methods as `:upload`,
`:cancel`), chat under `/fireworks/inference/v1/chat/completions` (the OpenAI-compatible URL
Fireworks documents; the SDK's own chat path `/fireworks/v1/chat/completions` too). Bearer key.
Route names (`fireworks.datasets.create`, ...) are the operations fault injection targets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Body, Request, UploadFile

from localai.dialect import Dialect

from .exceptions import FireworksError
from .models import KINDS, FireworksBackend

router = APIRouter(prefix="/fireworks")
ACCOUNT = "/v1/accounts/{account}"


def fireworks(request: Request) -> FireworksBackend:
    return request.app.state.service.fireworks


def kind_of(kind: str) -> str:
    if kind not in KINDS:
        raise FireworksError(404, f"Unknown collection {kind}.")
    return kind


@router.post(ACCOUNT + "/datasets", name="fireworks.datasets.create")
def create_dataset(request: Request, account: str, body: dict[str, Any] = Body(...)) -> dict:
    return fireworks(request).create_dataset(account, body)


@router.get(ACCOUNT + "/datasets", name="fireworks.datasets.list")
def list_datasets(request: Request, account: str) -> dict:
    return fireworks(request).list_datasets(account)


@router.get(ACCOUNT + "/datasets/{dataset_id}", name="fireworks.datasets.get")
def get_dataset(request: Request, account: str, dataset_id: str) -> dict:
    backend = fireworks(request)
    return backend.dataset_view(backend.dataset(account, dataset_id))


@router.post(ACCOUNT + "/datasets/{dataset_id}:upload", name="fireworks.datasets.upload")
async def upload(request: Request, account: str, dataset_id: str) -> dict:
    form = await request.form()
    file = form.get("file")
    if not isinstance(file, UploadFile) and not hasattr(file, "read"):
        raise FireworksError(400, "file is required (multipart form field `file`).")
    content = await file.read()  # type: ignore[union-attr]
    return fireworks(request).upload(account, dataset_id, getattr(file, "filename", None) or "", content)


@router.post(ACCOUNT + "/{kind}", name="fireworks.jobs.create")
def create_job(request: Request, account: str, kind: str, body: dict[str, Any] = Body(...)) -> dict:
    kind = kind_of(kind)
    chosen = request.query_params.get("supervisedFineTuningJobId" if kind == "supervisedFineTuningJobs" else "dpoJobId")
    return fireworks(request).create_job(account, kind, chosen, body)


@router.get(ACCOUNT + "/{kind}", name="fireworks.jobs.list")
def list_jobs(request: Request, account: str, kind: str) -> dict:
    return fireworks(request).list_jobs(account, kind_of(kind))


@router.get(ACCOUNT + "/{kind}/{job_id}", name="fireworks.jobs.get")
def get_job(request: Request, account: str, kind: str, job_id: str) -> dict:
    backend = fireworks(request)
    return backend.job_view(backend.job(account, kind_of(kind), job_id))


@router.post(ACCOUNT + "/{kind}/{job_id}:cancel", name="fireworks.jobs.cancel")
def cancel_job(request: Request, account: str, kind: str, job_id: str) -> dict:
    return fireworks(request).cancel(account, kind_of(kind), job_id)


@router.post("/inference/v1/chat/completions", name="fireworks.chat.completions.create")
@router.post("/v1/chat/completions", name="fireworks.chat.completions.create_sdk_path")
def chat_completion(request: Request, body: dict[str, Any] = Body(...)) -> dict:
    return fireworks(request).chat_completion(body)


class FireworksDialect(Dialect):
    name = "fireworks"
    prefixes = ("/fireworks/",)

    def routers(self) -> Sequence[APIRouter]:
        return [router]

    def unauthorized(self, token: str | None) -> FireworksError:
        return FireworksError(401, "The API key you provided is invalid." if token else "Missing API key.")

    def invalid(self, message: str, *, param: str | None = None, status: int = 400) -> FireworksError:
        return FireworksError(status, message)

    def rate_limited(self, retry_after: float) -> FireworksError:
        error = FireworksError(429, "Rate limit exceeded; please retry later.")
        error.headers = {"retry-after": f"{retry_after:g}"}
        return error

    def server_error(self, status: int) -> FireworksError:
        return FireworksError(status, "Internal error; please retry.")
