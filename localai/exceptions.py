"""Errors with OpenAI's status codes and `{"error": {message, type, param, code}}` body.

APIError                  any error the service answers with
├── InvalidRequest        400 invalid_request_error
├── AuthenticationFailed  401 invalid_api_key
├── PermissionDenied      403
├── NotFound              404 (message names the object, as OpenAI's does)
├── RateLimited           429 rate_limit_exceeded (+ Retry-After), injected by faults
├── DailyJobLimit         429 daily_rate_limit_exceeded: the day's fine-tuning jobs for a model are spent
└── ServerError           500/502/503 server_error, injected by faults
"""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    status = 400
    type = "invalid_request_error"

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class InvalidRequest(APIError):
    status = 400


class AuthenticationFailed(APIError):
    status = 401


class PermissionDenied(APIError):
    status = 403


class NotFound(APIError):
    status = 404

    @classmethod
    def missing(cls, kind: str, object_id: str, *, param: str = "id") -> NotFound:
        """OpenAI's wording for an unknown object id."""
        return cls(f"No such {kind}: {object_id}", param=param)


class RateLimited(APIError):
    status = 429
    type = "requests"

    def __init__(self, retry_after: float) -> None:
        super().__init__(
            "Rate limit reached for requests. Please try again later.",
            code="rate_limit_exceeded",
            headers={"retry-after": f"{retry_after:g}"},
        )


class DailyJobLimit(APIError):
    """OpenAI's answer to a job create over the organisation's daily limit, word for word.

    Body as reported by users (johny-b/llmcomp#58): 429, type `invalid_request_error`,
    code `daily_rate_limit_exceeded`, no Retry-After.
    """

    status = 429

    def __init__(self, limit: int, model: str) -> None:
        super().__init__(
            "This fine-tune request has been rate-limited. Your organization has reached the maximum of "
            f"{limit} fine-tuning requests per day for the model '{model}'.",
            code="daily_rate_limit_exceeded",
        )


class ServerError(APIError):
    type = "server_error"

    def __init__(self, status: int) -> None:
        super().__init__("The server had an error while processing your request. Sorry about that!")
        self.status = status
