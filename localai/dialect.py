"""What the gateway needs to know about one provider's API: its paths, its key, its errors.

The service speaks several providers' dialects on one port, as moto emulates several AWS
services: OpenAI under `/v1`, Azure OpenAI under `/openai` (and ARM under `/subscriptions`),
Together under `/together/v1`, Google under `/vertex` and `/gcs`, AWS under `/s3`, `/bedrock`
and `/bedrock-runtime`, Fireworks under `/fireworks`; the service's own routes under `/_admin`
(admin.py). Each dialect says which paths are its own, how a client presents its key
there (a bearer key, or an AWS SigV4 signature that `verify` checks), and how that provider
words the errors the gateway itself answers (missing key, wrong key, injected 429s and 5xx,
malformed requests). Fault injection then
works the same in every dialect: operations are the route names of the dialect's routers.

The defaults below are OpenAI's (a bearer key, OpenAI's error envelope), which other providers
copy in part; each dialect overrides what its provider does differently.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from typing import Any

from fastapi import APIRouter

from localai.exceptions import APIError, AuthenticationFailed, InvalidRequest, RateLimited, ServerError

Scope = MutableMapping[str, Any]


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def bearer(scope: Scope) -> str | None:
    scheme, _, token = (header(scope, b"authorization") or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def masked(token: str) -> str:
    return f"{token[:3]}***{token[-4:]}" if len(token) > 8 else "***"


class Dialect:
    """One provider's API on the service's port: the paths it owns, its key, its errors."""

    name: str
    prefixes: tuple[str, ...]
    #: True: requests are signed (AWS SigV4) and `verify` checks them, instead of a bearer key.
    signed = False

    def routers(self) -> Sequence[APIRouter]:
        raise NotImplementedError

    def owns(self, path: str) -> bool:
        return path.startswith(self.prefixes)

    def credential(self, scope: Scope) -> str | None:
        return bearer(scope)

    def verify(self, scope: Scope, body: bytes, secret: str) -> APIError | None:
        """A signed dialect's check of the request's signature (None: signed with `secret`)."""
        raise NotImplementedError(f"the {self.name} dialect takes a bearer key")

    def unauthorized(self, token: str | None) -> APIError:
        if token is None:
            return AuthenticationFailed(
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
        return AuthenticationFailed(f"Incorrect API key provided: {masked(token)}.", code="invalid_api_key")

    def rate_limited(self, retry_after: float) -> APIError:
        return RateLimited(retry_after)

    def server_error(self, status: int) -> APIError:
        return ServerError(status)

    def invalid(self, message: str, *, param: str | None = None, status: int = 400) -> APIError:
        error = InvalidRequest(message, param=param)
        error.status = status
        return error
