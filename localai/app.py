"""The service: backends wired together, a scheduler thread, auth, faults and each dialect's errors."""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from localai.admin import ServiceDialect
from localai.aws import AwsBackend, BedrockDialect, BedrockRuntimeDialect, S3Dialect
from localai.azure import ArmDialect, AzureBackend, AzureDialect
from localai.config import ServiceConfig
from localai.dialect import Dialect
from localai.exceptions import APIError
from localai.faults import FaultInjector
from localai.fireworks import FireworksBackend, FireworksDialect
from localai.openai import OpenAIBackend, OpenAIDialect
from localai.together import TogetherBackend, TogetherDialect
from localai.vertex import StorageDialect, VertexBackend, VertexDialect

log = logging.getLogger("localai")
UNPARSABLE_BODY = (
    "We could not parse the JSON body of your request. The API expects a JSON payload, but what was sent "
    "was not valid JSON."
)
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


class Service:
    """Each provider's backend (its own state, moto-style), the dialects the gateway speaks, and
    the scheduler that advances every backend's jobs."""

    def __init__(self, config: ServiceConfig) -> None:
        assert config.api_key, "the API key is set before the service is built"
        self.config = config
        self.faults = FaultInjector(config.faults)
        self.openai = OpenAIBackend(config, self.faults)
        self.azure = AzureBackend(config)
        self.together = TogetherBackend(config)
        self.vertex = VertexBackend(config)
        self.aws = AwsBackend(config)
        self.fireworks = FireworksBackend(config)
        self.backends = (self.openai, self.azure, self.together, self.vertex, self.aws, self.fireworks)
        #: The service's own voice: its admin routes, and a path no provider's dialect owns.
        self.own_dialect = ServiceDialect()
        self.dialects: list[Dialect] = [
            OpenAIDialect(), self.own_dialect, AzureDialect(), ArmDialect(), TogetherDialect(), VertexDialect(),
            StorageDialect(), S3Dialect(), BedrockDialect(), BedrockRuntimeDialect(), FireworksDialect()]
        self._stop = threading.Event()
        self._scheduler: threading.Thread | None = None

    def start_scheduler(self) -> None:
        self._scheduler = threading.Thread(target=self._loop, name="localai-scheduler", daemon=True)
        self._scheduler.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.config.tick_seconds):
            for backend in self.backends:
                try:
                    backend.jobs.advance()
                except Exception:  # jobs fail alone inside advance(); this is the store itself failing
                    log.exception("scheduler tick failed")

    def stop(self) -> None:
        self._stop.set()
        if self._scheduler:
            self._scheduler.join(timeout=5)
        for backend in self.backends:
            backend.store.close()

    def dialect_of(self, path: str) -> Dialect | None:
        """The dialect that owns `path`; None outside them all, where the gateway asks no key (Together's
        signed upload URL, or a 404)."""
        return next((d for d in self.dialects if d.owns(path)), None)


def error_response(error: APIError) -> Response:
    render = getattr(error, "render", None)  # a dialect whose errors are not JSON envelopes (S3's XML)
    return render() if render else JSONResponse(error.body(), status_code=error.status, headers=error.headers)


class GatewayMiddleware:
    """Authentication first, then the fault drawn for this request's operation, in the request's dialect.

    Any error no handler answered becomes a 500 envelope here, logged once with its
    traceback (the server does not log it again).
    """

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service
        self.operations = {
            dialect.name: [(r.path_regex, r.methods, r.name) for router in dialect.routers() for r in router.routes]
            for dialect in service.dialects
        }

    def _operation(self, scope: Scope, dialect: Dialect) -> str | None:
        """The route name (operation) of a request, e.g. `files.create` or `azure.files.create`."""
        for regex, methods, name in self.operations[dialect.name]:
            if scope["method"] in methods and regex.match(scope["path"]):
                return name
        return None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._dispatch(scope, receive, send_tracked)
        except Exception:
            if started:  # too late for a reply (or a lost response injected on purpose)
                raise
            log.exception("unhandled error in %s %s", scope["method"], scope["path"])
            dialect = self.service.dialect_of(scope.get("path", "")) or self.service.own_dialect
            await error_response(dialect.server_error(500))(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        dialect = self.service.dialect_of(path)
        if dialect is None:
            return await self.app(scope, receive, send)
        if dialect.signed:  # AWS: the signature covers the body, so the body is read first
            receive, body = await self._buffered(receive)
            refused = dialect.verify(scope, body, self.service.config.api_key or "")
            if refused is not None:
                return await error_response(refused)(scope, receive, send)
        else:
            token = dialect.credential(scope)
            if token is None or not hmac.compare_digest(token.encode(), (self.service.config.api_key or "").encode()):
                return await error_response(dialect.unauthorized(token))(scope, receive, send)
        operation = self._operation(scope, dialect)
        if operation is None or operation.startswith("admin."):
            return await self.app(scope, receive, send)
        fault, rule = self.service.faults.draw(operation)
        if fault == "rate_limit":
            return await error_response(dialect.rate_limited(rule.retry_after))(scope, receive, send)
        if fault == "server_error":
            status = self.service.faults.server_error_status()
            return await error_response(dialect.server_error(status))(scope, receive, send)
        if fault == "slow":
            receive, _ = await self._buffered(receive)  # the request is in hand before the client gives up
            await asyncio.sleep(rule.slow_seconds)
        if fault == "lost_response":
            return await self._lose_response(scope, receive, send)
        return await self.app(scope, receive, send)

    @staticmethod
    async def _buffered(receive: Any) -> tuple[Any, bytes]:
        """Read the whole request body now; replay it to the app later (and the body's bytes)."""
        messages = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        replay = iter(messages)

        async def receive_again() -> Message:
            return next(replay, {"type": "http.disconnect"})

        return receive_again, b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")

    async def _lose_response(self, scope: Scope, receive: Any, send: Any) -> None:
        """Carry the operation out, then break the connection in the middle of the reply."""

        async def discard(message: Message) -> None:
            return None

        await self.app(scope, receive, discard)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"id": "', "more_body": True})
        raise ConnectionAbortedError("fault injection: response lost after the operation was carried out")


def create_app(config: ServiceConfig) -> FastAPI:
    service = Service(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        service.start_scheduler()
        yield
        service.stop()

    app = FastAPI(
        title="ftflow local OpenAI-compatible service",
        lifespan=lifespan,
        openapi_url="/openapi.json" if config.openapi else None,
        docs_url=None,  # a browser cannot send the bearer key; the schema is for tools
        redoc_url=None,
    )
    app.state.service = service
    for dialect in service.dialects:
        for router in dialect.routers():
            app.include_router(router)

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        dialect = service.dialect_of(request.url.path) or service.own_dialect
        if first.get("type") == "json_invalid" or tuple(first.get("loc", ())) == ("body",):
            return error_response(dialect.invalid(UNPARSABLE_BODY))
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return error_response(dialect.invalid(f"{first.get('msg', 'Invalid request')}: {param}", param=param))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = (
            f"Invalid URL ({request.method} {request.url.path})" if exc.status_code in (404, 405) else str(exc.detail)
        )
        dialect = service.dialect_of(request.url.path) or service.own_dialect
        return error_response(dialect.invalid(message, status=exc.status_code))

    app.add_middleware(GatewayMiddleware, service=service)
    return app
