"""How ftflow's processes end: with the process that started them, on SIGTERM as on Ctrl-C, and
without the interpreter's last garbage collections.

At exit, CPython runs full garbage collections over every object still alive. After importing
Prefect, pandas and Great Expectations that is millions of objects: `python -c "import
great_expectations, prefect, pandas"` takes 4.6 s here, 3.0 s of it the imports and 1.6 s the
exit. Nothing an ftflow process needs happens in those collections: its files are closed by
then and Prefect's log and event workers were drained by their exit hooks, which run first.
`gc.freeze` in an exit hook moves the heap out of the collector's sight; objects are still
freed by reference counting, and `weakref.finalize` callbacks and `atexit` hooks still run.

The command goes one step further (`end_after_exit_hooks`): once every exit hook has run, it
ends (`os._exit`) without the interpreter's teardown of its modules, 0.10-0.14 s of CPU after
the last hook of a 20-line `prepare` (load 5 on the 2-core machine, 2026-12-07). Logging (every
handler closed), multiprocessing (its children, named semaphores) and Prefect (its log and event
workers drained) do what they must at exit in their own hooks, which run before it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import gc
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any


def skip_final_collections() -> None:
    """Freeze the heap when this process exits, before the interpreter's final collections."""
    atexit.register(gc.freeze)


_exit_status: list[int] = []  # set by end_after_exit_hooks: the status to end with after the last hook


def exit_status(code: object) -> int:
    """The status Python exits with on `SystemExit(code)`: None is 0, an int itself, else 1 (the
    interpreter prints anything else on stderr first)."""
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def end_after_exit_hooks(code: object) -> None:
    """When this process exits with `SystemExit(code)`, end it right after its exit hooks."""
    _exit_status[:] = [exit_status(code)]


def _end_now() -> None:
    """The last exit hook (registered before any other, ftflow/__init__.py): end here if asked to,
    with the streams written out; should that fail, Python's own exit reports it, as ever."""
    if not _exit_status:
        return
    try:
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):
        return
    os._exit(_exit_status[0])


def register_last_exit_hook() -> None:
    """Register `_end_now`; done before any other exit hook, it runs after all of them. It does
    nothing until `end_after_exit_hooks` is called."""
    atexit.register(_end_now)


def exit_with_parent() -> None:
    """End this process when the process that started it is gone.

    A killed command (SIGKILL, OOM) must not leave its helper processes (shard workers, the
    quality suites' process) behind, still working and holding its output pipes open.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class Stopped(KeyboardInterrupt):
    """Raised in the main thread when the command gets SIGTERM or SIGINT.

    A KeyboardInterrupt, so Prefect and every `finally` treat SIGTERM exactly as Ctrl-C: the
    flow run ends as crashed, the temporary Prefect server is stopped, the suites' process
    closed. The command then exits with 128 + the signal's number (143, 130).
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_received: list[int] = []
_deferring = 0  # depth of `signals_deferred` blocks on the main thread


def _stop(signum: int, _frame: Any) -> None:
    _received.append(signum)
    for child in multiprocessing.active_children():  # shard workers, the suites' process
        child.terminate()
    if not _deferring:
        raise Stopped(signum)


def _raise_again(unraisable: Any, passed_on: Callable[[Any], None]) -> None:
    """A Stopped raised where Python ignores exceptions (a weakref or import-lock callback, a
    `__del__`: "Exception ignored in ...") would be lost and the command would go on. Raising it
    here would be ignored too, so an alarm raises it again a moment later, in whatever code runs
    then (and again, should that be such a callback too)."""
    if not isinstance(unraisable.exc_value, Stopped):
        passed_on(unraisable)
        return
    signum = unraisable.exc_value.signum
    signal.signal(signal.SIGALRM, lambda _alarm, frame: _stop(signum, frame))
    signal.setitimer(signal.ITIMER_REAL, 0.01)


@contextlib.contextmanager
def stopped_by_signals() -> Iterator[list[int]]:
    """SIGTERM and SIGINT stop the command as Ctrl-C does (see Stopped); yields the signals received."""
    _received.clear()
    previous = {signum: signal.signal(signum, _stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGALRM] = signal.getsignal(signal.SIGALRM)  # _raise_again's, once stopping
    previous_hook = sys.unraisablehook
    sys.unraisablehook = functools.partial(_raise_again, passed_on=previous_hook)
    try:
        yield _received
    finally:
        if _received:  # an alarm of _raise_again's must not go off after this
            signal.setitimer(signal.ITIMER_REAL, 0)
        sys.unraisablehook = previous_hook
        for signum, handler in previous.items():
            if handler is not None:  # None: a handler not set from Python, which cannot be put back
                signal.signal(signum, handler)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """A step that must not stop halfway (publishing): a stopping signal raises after it."""
    global _deferring
    before = len(_received)
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
    if len(_received) > before and not _deferring:  # a signal came meanwhile (only ever under stopped_by_signals)
        signal.raise_signal(_received[-1])  # the handler raises Stopped on the main thread, now


def die_with_parent() -> None:
    """For a subprocess.Popen `preexec_fn`: the child gets SIGTERM when the process that started
    it dies, however it died (SIGKILL included). Linux only; elsewhere nothing."""
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:  # the parent died before that: nobody will stop this process
        os._exit(1)


PR_SET_PDEATHSIG = 1
