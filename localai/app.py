"""The service: backends wired together, a scheduler thread, auth, faults and OpenAI's errors."""

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
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from localai import routes
from localai.chat import ChatBackend
from localai.config import ServiceConfig
from localai.exceptions import APIError, AuthenticationFailed, InvalidRequest, RateLimited, ServerError
from localai.faults import FaultInjector
from localai.files import FilesBackend
from localai.jobs import JobsBackend
from localai.models import ModelsBackend
from localai.store import Store
from localai.uploads import UploadsBackend

log = logging.getLogger("localai")
UNPARSABLE_BODY = (
    "We could not parse the JSON body of your request. The API expects a JSON payload, but what was sent "
    "was not valid JSON."
)
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


class Service:
    """All resource backends over one store, and the scheduler that advances jobs."""

    def __init__(self, config: ServiceConfig) -> None:
        assert config.api_key, "the API key is set before the service is built"
        self.config = config
        self.store = Store(config.data_dir)
        self.files = FilesBackend(self.store, config.max_file_bytes)
        self.uploads = UploadsBackend(self.store, self.files)
        self.models = ModelsBackend(self.store)
        self.jobs = JobsBackend(
            self.store,
            self.files,
            self.models,
            seconds_per_1k_tokens=config.seconds_per_1k_tokens,
            refusal=config.refusal,
            daily_job_limit=config.daily_job_limit,
        )
        self.chat = ChatBackend(self.store, self.models, instruction_following=config.instruction_following)
        self.faults = FaultInjector(config.faults)
        self._stop = threading.Event()
        self._scheduler: threading.Thread | None = None

    def start_scheduler(self) -> None:
        self._scheduler = threading.Thread(target=self._loop, name="localai-scheduler", daemon=True)
        self._scheduler.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.config.tick_seconds):
            try:
                self.jobs.advance()
            except Exception:  # jobs fail alone inside advance(); this is the store itself failing
                log.exception("scheduler tick failed")

    def stop(self) -> None:
        self._stop.set()
        if self._scheduler:
            self._scheduler.join(timeout=5)
        self.store.close()


def error_response(error: APIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


class GatewayMiddleware:
    """Authentication first, then the fault drawn for this request's operation.

    Any error no handler answered becomes OpenAI's 500 envelope here, logged once with its
    traceback (the server does not log it again).
    """

    PROTECTED = ("/v1/", "/_admin/", "/openapi.json")

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service
        self.operations = [(r.path_regex, r.methods, r.name) for r in [*routes.router.routes, *routes.admin.routes]]

    def _operation(self, scope: Scope) -> str | None:
        """The route name (operation) of a request, e.g. `files.create`."""
        for regex, methods, name in self.operations:
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
            await error_response(ServerError(500))(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if not path.startswith(self.PROTECTED):
            return await self.app(scope, receive, send)
        token = _bearer(scope)
        if token is None:
            error = AuthenticationFailed(
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
            return await error_response(error)(scope, receive, send)
        if not hmac.compare_digest(token.encode(), (self.service.config.api_key or "").encode()):
            masked = f"{token[:3]}***{token[-4:]}" if len(token) > 8 else "***"
            error = AuthenticationFailed(f"Incorrect API key provided: {masked}.", code="invalid_api_key")
            return await error_response(error)(scope, receive, send)
        operation = self._operation(scope)
        if operation is None or operation.startswith("admin."):
            return await self.app(scope, receive, send)
        fault, rule = self.service.faults.draw(operation)
        if fault == "rate_limit":
            return await error_response(RateLimited(rule.retry_after))(scope, receive, send)
        if fault == "server_error":
            return await error_response(ServerError(self.service.faults.server_error_status()))(scope, receive, send)
        if fault == "slow":
            receive = await self._buffered(receive)  # the request is in hand before the client gives up
            await asyncio.sleep(rule.slow_seconds)
        if fault == "lost_response":
            return await self._lose_response(scope, receive, send)
        return await self.app(scope, receive, send)

    @staticmethod
    async def _buffered(receive: Any) -> Any:
        """Read the whole request body now; replay it to the app later."""
        messages = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        replay = iter(messages)

        async def receive_again() -> Message:
            return next(replay, {"type": "http.disconnect"})

        return receive_again

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
    app.include_router(routes.router)
    app.include_router(routes.admin)

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid" or tuple(first.get("loc", ())) == ("body",):
            return error_response(InvalidRequest(UNPARSABLE_BODY))
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return error_response(InvalidRequest(f"{first.get('msg', 'Invalid request')}: {param}", param=param))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = (
            f"Invalid URL ({request.method} {request.url.path})" if exc.status_code in (404, 405) else str(exc.detail)
        )
        error = InvalidRequest(message)
        error.status = exc.status_code
        return error_response(error)

    app.add_middleware(GatewayMiddleware, service=service)
    return app
