"""Fireworks' control-plane errors: `{"code": <gRPC code>, "message": ..., "details": []}` with the
HTTP status gRPC-gateway maps it to (ALREADY_EXISTS 409, NOT_FOUND 404, INVALID_ARGUMENT 400,
UNAUTHENTICATED 401, RESOURCE_EXHAUSTED 429, INTERNAL 500, UNAVAILABLE 503). The SDK (Stainless)
picks its exception class from the status and keeps the body.
"""

from __future__ import annotations

from typing import Any

from localai.exceptions import APIError

GRPC = {400: 3, 401: 16, 403: 7, 404: 5, 409: 6, 429: 8, 500: 13, 502: 14, 503: 14}


class FireworksError(APIError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message, code=str(GRPC.get(status, 2)))
        self.status = status

    def body(self) -> dict[str, Any]:
        return {"code": GRPC.get(self.status, 2), "message": self.message, "details": []}
