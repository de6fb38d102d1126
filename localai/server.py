"""Run the service: in a thread on a free loopback port (tests, and the child process of
localai/process.py, the pipeline's), or in the foreground (`python -m localai`, `ftflow service`)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from localai.app import create_app
from localai.config import ServiceConfig, with_key


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class LocalService:
    """The service in a background thread; `base_url` and `api_key` are what a client needs."""

    def __init__(
        self, config: ServiceConfig | None = None, *, host: str = "127.0.0.1", port: int | None = None, **overrides: Any
    ) -> None:
        base = config or ServiceConfig()
        self.config = with_key(base.model_copy(update=overrides) if overrides else base)
        self.host = host
        self.port = port or free_port(host)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def api_key(self) -> str:
        assert self.config.api_key
        return self.config.api_key

    @property
    def service(self) -> Any:
        assert self._server is not None
        return self._server.config.app.state.service  # type: ignore[union-attr]

    def start(self, timeout: float = 30.0) -> LocalService:
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        app = create_app(self.config)
        # log_config=None: uvicorn's own logging config (dictConfig) would shut down every handler
        # of the host process, Prefect's API log handler too, which then waited 5 s to drain and
        # warned "EventsWorker - Still processing items" in the middle of a run.
        config = uvicorn.Config(app, host=self.host, port=self.port, log_level="warning", log_config=None,
                                lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="localai-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"local service did not start on {self.host}:{self.port}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> LocalService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def announcement(config: ServiceConfig, *, host: str, port: int, generated: bool) -> list[str]:
    """What the service prints at start. The key only when it generated it: nobody else knows
    it then. A key from the environment is already known and is never printed."""
    url = f"http://{host}:{port}/v1"
    lines = [f"ftflow local OpenAI-compatible service (a simulator) at {url}"]
    if generated:
        lines.append(f"OPENAI_BASE_URL={url} OPENAI_API_KEY={config.api_key}")
    else:
        lines.append(f"OPENAI_BASE_URL={url}; clients use the key from FTFLOW_SERVICE_API_KEY (not shown)")
    lines.append(f"Azure OpenAI: AZURE_OPENAI_ENDPOINT=http://{host}:{port} (api-key header; ARM under /subscriptions)")
    lines.append(f"Together: TOGETHER_BASE_URL=http://{host}:{port}/together")
    return lines


def serve_forever(*, host: str, port: int, data_dir: Path | None = None, config: ServiceConfig | None = None,
                  announce: Any = print) -> None:
    """Run in the foreground; print the base URL (and a generated key) once. `config`: settings
    resolved by the caller (`ftflow service`: ftflow's settings); else FTFLOW_SERVICE_* alone."""
    configured = config or ServiceConfig(**({"data_dir": data_dir} if data_dir else {}))
    config = with_key(configured)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    for line in announcement(config, host=host, port=port, generated=not configured.api_key):
        announce(line)
    uvicorn.run(create_app(config), host=host, port=port, log_level="info")
