"""Azure's error envelope, `{"error": {"code", "message", "target"?}}`, with the spec's codes.

Codes come from the `ErrorCode` enum of the 2024-10-21 authoring spec (invalidPayload,
notFound, quotaExceeded, tooManyRequests, unauthorized, ...); chat and ARM use their own
string codes (DeploymentNotFound, MissingApiVersionParameter). The `openai` SDK reads
`code` and `message` from this envelope like OpenAI's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from localai.exceptions import APIError

CORE_CODES = {400: "invalidPayload", 401: "unauthorized", 403: "forbidden", 404: "notFound", 409: "conflict"}


class AzureError(APIError):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        target: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, param=target, code=code, headers=headers)
        self.status = status

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.param:
            error["target"] = self.param
        return {"error": error}


def invalid(message: str, target: str | None = None) -> AzureError:
    return AzureError(400, "invalidPayload", message, target=target)


def quota_exceeded(message: str) -> AzureError:
    return AzureError(400, "quotaExceeded", message)


def deployment_not_found() -> AzureError:
    # Azure's wording when a chat names no (ready) deployment.
    return AzureError(
        404,
        "DeploymentNotFound",
        "The API deployment for this resource does not exist. If you created the deployment within the last "
        "5 minutes, please wait a moment and try again.",
    )


@contextmanager
def azure_errors() -> Iterator[None]:
    """Re-word an error of the shared engine (OpenAI's envelope) as Azure does."""
    try:
        yield
    except AzureError:
        raise
    except APIError as error:
        code = CORE_CODES.get(error.status, "invalidPayload")
        raise AzureError(error.status, code, error.message, target=error.param, headers=error.headers) from None
