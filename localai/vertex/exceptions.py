"""Google's error envelope: `{"error": {"code": <HTTP status>, "message", "status": <canonical code>}}`.

Vertex AI (google.rpc.Status over JSON) names the canonical code in `status`
(INVALID_ARGUMENT, UNAUTHENTICATED, PERMISSION_DENIED, NOT_FOUND, RESOURCE_EXHAUSTED, ...);
`google-genai` raises ClientError/ServerError with `code`, `status` and `message` from it.
Cloud Storage's JSON API adds `errors: [{"domain", "reason", "message"}]`, which
`google-cloud-storage` (google-api-core) reads into Forbidden, NotFound, Conflict, ...
"""

from __future__ import annotations

from typing import Any

from localai.exceptions import APIError

STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
          409: "ALREADY_EXISTS", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 502: "UNAVAILABLE", 503: "UNAVAILABLE",
          504: "DEADLINE_EXCEEDED"}
GCS_REASONS = {400: "invalid", 401: "required", 403: "forbidden", 404: "notFound", 409: "conflict",
               429: "rateLimitExceeded", 500: "backendError", 502: "backendError", 503: "backendError"}


class GoogleError(APIError):
    """An error of the Vertex AI API."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, code=STATUS.get(status, "UNKNOWN"), headers=headers)
        self.status = status

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.status, "message": self.message, "status": self.code}}


class StorageError(GoogleError):
    """An error of the Cloud Storage JSON API (the envelope with its `errors` list)."""

    def __init__(self, status: int, message: str, *, reason: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status, message, headers=headers)
        self.reason = reason or GCS_REASONS.get(status, "backendError")

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.status, "message": self.message,
                          "errors": [{"message": self.message, "domain": "global", "reason": self.reason}]}}
