"""The service's own routes, never called by an SDK: the fault plan and health under `/_admin`.

They and the service's schema (`/openapi.json`) take the service key as a bearer key and answer
in OpenAI's envelope, the gateway's defaults (dialect.py); so does a path no dialect owns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from fastapi import APIRouter, Body, Request

from localai.dialect import Dialect
from localai.faults import FaultInjector, FaultPlan

router = APIRouter(prefix="/_admin")


def faults(request: Request) -> FaultInjector:
    return request.app.state.service.faults


@router.get("/faults", name="admin.faults.get")
def get_faults(request: Request) -> dict:
    return faults(request).status()


@router.put("/faults", name="admin.faults.put")
def put_faults(request: Request, plan: FaultPlan = Body(...)) -> dict:
    faults(request).configure(plan)
    return faults(request).status()


@router.get("/health", name="admin.health")
def health(request: Request) -> dict[str, Literal["ok"]]:
    return {"status": "ok"}


class ServiceDialect(Dialect):
    name = "service"
    prefixes = ("/_admin/", "/openapi.json")

    def routers(self) -> Sequence[APIRouter]:
        return [router]
