"""The quality gate's Great Expectations suites in a process of their own, started with the command.

Every prepare runs the GX suites, and importing GX takes about as long as importing Prefect
and the flows together. In the command's own process (a background thread, before) that import
shared one interpreter lock with the command's imports and steps; in a process of its own it
runs on the other core while the command imports its flows and runs the steps before the
gate, which then sends the features file's path and gets the verdict back.

The `prepare` and `retrain` commands start it (`suites_process()`); anywhere else (a flow run
by a Prefect worker, a test that calls a flow) `run` runs the suites in the calling process.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing
import threading
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


def _serve(connection: Connection) -> None:
    """The process: import GX and the suites' code, then run what it is sent, one call at a time."""
    from ftflow.process_exit import exit_with_parent, skip_final_collections

    exit_with_parent()
    skip_final_collections()
    for module in ("great_expectations", "tasks.quality"):  # the imports this process exists to do early
        importlib.import_module(module)

    while True:
        try:
            function, args = connection.recv()
        except EOFError:  # the command closed its end: it is done
            return
        try:
            answer = (True, function(*args))
        except Exception as exc:  # noqa: BLE001 - raised again in the command's process
            answer = (False, exc)
        connection.send(answer)


class SuitesProcess:
    """A spawned process that runs functions for the command, one call at a time."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._connection, theirs = context.Pipe()
        # Daemonic: never waited for at exit, and stopped at once if the command ends first.
        self._process = context.Process(target=_serve, args=(theirs,), name="ftflow-suites", daemon=True)
        self._process.start()
        theirs.close()
        self._lock = threading.Lock()

    def run(self, function: Callable[..., T], *args: Any) -> T:
        with self._lock:
            self._connection.send((function, args))
            ok, value = self._connection.recv()  # EOFError if the process is gone
        if not ok:
            raise value
        return value

    def close(self) -> None:
        self._connection.close()
        self._process.terminate()  # still importing, or idle: nothing of its own to finish
        self._process.join(5)


_current: SuitesProcess | None = None


@contextlib.contextmanager
def suites_process() -> Iterator[None]:
    """Start the suites' process now; `run` uses it until the block ends, when it stops."""
    global _current
    started = SuitesProcess()
    _current = started
    try:
        yield
    finally:
        _current = None
        started.close()


def run(function: Callable[..., T], *args: Any) -> T:
    """function(*args) in the suites' process if the command started one, else here."""
    current = _current
    if current is not None:
        try:
            return current.run(function, *args)
        except (EOFError, OSError):
            log.warning("the quality suites' process ended unexpectedly; running the suites in this process")
    return function(*args)
