"""The quality gate's Great Expectations, imported early: in a process of its own, or on a thread.

Every prepare runs the GX suites, and importing GX takes about as long as importing Prefect
and the flows together. The `prepare` and `retrain` commands start that import first thing
(`start_suites`), in one of two places, by what the machine's other core is doing:
- With a running Prefect server (PREFECT_API_URL) the other core is free: GX is imported in a
  process of its own while the command imports its flows and runs the steps before the gate,
  which sends it the features file's path and gets the verdict back (`run`). 20 lines on this
  machine: 9.4-12.1 s on a thread, 7.6-9.7 s in its own process (five runs each, alternating).
- With the command's temporary server, that server boots on the other core and the command's
  own interpreter waits for it: GX is imported on a thread of the command, filling the wait.
  A third process competing with the server measured slower (20 lines: 12.3-13.5 s on a
  thread, 12.1-16.2 s in its own process).
Anywhere else (a flow run by a Prefect worker, a test that calls a flow) `run` runs the suites
in the calling process; so does a command in a process that has imported GX already (a program
or test calling the commands' app again, `imported`): there is no import left to overlap.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import multiprocessing
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
SUITES_MODULES = ("great_expectations", "tasks.suites")  # the suites without Prefect (tasks/quality.py has the task)
# GX imports SciPy's statistics (a quarter of its import) for expectations and metrics the suites
# never use (KL divergence, KS tests), and Altair (0.3 s of CPU, an eighth of what is left) for the
# KL divergence expectation's chart; in the suites' process they load on first use instead.
LAZY_PACKAGES = ("scipy", "altair")


class LazyImports(importlib.abc.MetaPathFinder):
    """Modules of `packages`, imported while this finder is installed, run their code on first
    use of an attribute, not on import (importlib.util.LazyLoader); extension modules load as ever."""

    def __init__(self, packages: tuple[str, ...]) -> None:
        self.packages = packages

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name.partition(".")[0] not in self.packages:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            spec.loader = importlib.util.LazyLoader(spec.loader)
        return spec


@contextlib.contextmanager
def lazy_imports(packages: tuple[str, ...]) -> Iterator[None]:
    """Import `packages` lazily in this block (LazyImports); not on a thread beside others: before
    Python 3.12 a lazy module is not thread-safe."""
    finder = LazyImports(packages)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def _import_suites() -> bool:
    """Import GX and the suites' code; False if that failed (the gate's own import reports why)."""
    try:
        for module in SUITES_MODULES:
            importlib.import_module(module)
    except Exception:  # noqa: BLE001 - reported where the gate imports them again
        log.debug("importing the quality suites early failed", exc_info=True)
        return False
    return True


def imported() -> bool:
    """Whether GX and the suites' code are imported in this process already."""
    return all(module in sys.modules for module in SUITES_MODULES)


STOPPED = 128 + signal.SIGTERM  # the exit code of a suites process stopped while still importing
_leaving = False  # set once the suites' process is on its way out


def _stop(*_: Any) -> None:
    global _leaving
    if not _leaving:  # else it is exiting already: let it finish closing what it opened
        _leaving = True  # a second SIGTERM (the command's own exit stops daemons too) must not interrupt it
        raise SystemExit(STOPPED)


def _drop_logs() -> None:
    """No log record or warning of the suites' process reaches the terminal, which shows the
    command's own output and its one `error:` line only; none has a flow run to go to either: the
    process runs no flow or task run, where a shard worker's API log handler (ftflow/terminal.py)
    would drop each record made outside one. Done without Prefect, whose import took this
    process almost half as long as importing GX."""
    logging.getLogger().addHandler(logging.NullHandler())
    logging.captureWarnings(True)


def _serve(connection: Connection) -> None:
    """The suites' process: import, then run what it is sent, one call at a time."""
    from ftflow.process_exit import exit_with_parent, skip_final_collections

    exit_with_parent()
    skip_final_collections()
    _drop_logs()
    # Stopped by the command while importing (SIGTERM): exit as on return. Never in the middle
    # of its own exit, which closes what the suites opened (tqdm's write lock, which GX creates,
    # is a named semaphore: else reported leaked at the command's exit).
    global _leaving
    signal.signal(signal.SIGTERM, _stop)
    with lazy_imports(LAZY_PACKAGES):
        imported = _import_suites()
    if not imported:
        return  # the command runs the suites itself and meets the error there
    while True:
        try:
            function, args = connection.recv()
        except EOFError:  # the command closed its end: it is done
            _leaving = True
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
        self._answered = False  # once it has answered, it has finished importing

    def run(self, function: Callable[..., T], *args: Any) -> T:
        with self._lock:
            self._connection.send((function, args))
            ok, value = self._connection.recv()  # EOFError if the process is gone
        self._answered = True
        if not ok:
            raise value
        return value

    def close(self) -> None:
        """Let the process leave on its own (it does when its end of the pipe closes); stop it if
        it is still importing (a process that has answered only has to exit, slower on a busy machine)."""
        self._connection.close()
        self._process.join(5 if self._answered else 0.5)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)


_current: SuitesProcess | None = None


@contextlib.contextmanager
def start_suites(own_process: bool) -> Iterator[None]:
    """Start importing GX now: in a process of its own, which `run` uses until the block ends
    (and then stops), or on a background thread of this process."""
    global _current
    if not own_process:
        threading.Thread(target=_import_suites, name="ftflow-import-suites", daemon=True).start()
        yield
        return
    started = SuitesProcess()
    _current = started
    try:
        yield
    finally:
        _current = None
        started.close()


def start_suites_for(server_booting: bool) -> contextlib.AbstractContextManager[None]:
    """What a command starts (see above): GX's own process beside a running server, a thread
    beside a booting one, and neither if GX is imported here already (`run` runs the suites here)."""
    if imported():
        return contextlib.nullcontext()
    return start_suites(own_process=not server_booting)


def run(function: Callable[..., T], *args: Any) -> T:
    """function(*args) in the suites' process if the command started one, else here."""
    current = _current
    if current is not None:
        try:
            return current.run(function, *args)
        except (EOFError, OSError):
            log.warning("the quality suites' process ended unexpectedly; running the suites in this process")
    return function(*args)
