"""What the terminal shows while a command runs a flow: progress on stdout, one line per error.

Prefect prints every log record of a run to stderr, and a run that fails prints the
exception with its traceback two or three times (task run, task state, flow run). For an
error of ours (ftflow.errors) that is noise: the CLI says it in one `error: ...` line, and
the traceback stays in the Prefect run log (the API log handler is left alone). So while a
command runs:
- run records below WARNING go to stdout, warnings to stderr;
- ERROR records of flow and task runs are held back; they are printed after all only when
  the command did not end with one of our errors (a bug must still show its traceback).
"""

from __future__ import annotations

import copy
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ftflow.errors import FtflowError

RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


def _console_handlers() -> list[logging.Handler]:
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in logging.root.manager.loggerDict)]
    found: dict[int, logging.Handler] = {}
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, PrefectConsoleHandler):
                found[id(handler)] = handler
    return list(found.values())


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Route Prefect's console output as the module docstring says, for the duration of a command."""
    import prefect  # noqa: F401  (importing prefect sets up its handlers; they must exist to be adjusted)

    held: list[tuple[logging.Handler, logging.LogRecord]] = []
    patched: list[tuple[logging.Handler, Any]] = []
    for handler in _console_handlers():
        stdout, stderr = copy.copy(handler.console), copy.copy(handler.console)
        stdout._file, stdout.stderr = None, False  # resolved at print time: works under test runners too
        stderr._file, stderr.stderr = None, True

        def emit(record: logging.LogRecord, handler: Any = handler, stdout: Any = stdout, stderr: Any = stderr) -> None:
            if record.levelno >= logging.ERROR and record.name.startswith(RUN_LOGGERS):
                held.append((handler, record))
                return
            try:
                (stderr if record.levelno >= logging.WARNING else stdout).print(handler.format(record), soft_wrap=True)
            except Exception:
                handler.handleError(record)

        patched.append((handler, handler.__dict__.get("emit")))
        handler.emit = emit  # type: ignore[method-assign]
    failure: BaseException | None = None
    try:
        yield
    except BaseException as exc:
        failure = exc
        raise
    finally:
        for handler, original in patched:
            if original is None:
                del handler.emit
            else:
                handler.emit = original  # type: ignore[method-assign]
        if not isinstance(failure, FtflowError):
            for handler, record in held:
                handler.handle(record)


def run_logs_only() -> None:
    """In a shard worker process: every log record goes to the flow run
    through Prefect's API log handler, none to the terminal, which shows the command's own
    output and its one `error:` line only.

    Prefect's console handlers are removed; the root logger's (library warnings, which Prefect
    prints) is replaced by an API log handler, which drops a record made outside any run.
    """
    from prefect.exceptions import MissingContextError
    from prefect.logging.handlers import APILogHandler

    class RunLogHandler(APILogHandler):
        def filter(self, record: logging.LogRecord) -> bool:  # run loggers have their own API handler
            return not record.name.startswith(RUN_LOGGERS) and super().filter(record)

        def handleError(self, record: logging.LogRecord) -> None:
            if not isinstance(sys.exc_info()[1], MissingContextError):  # outside a run: no run to send to
                super().handleError(record)

    for handler in _console_handlers():
        for logger in [logging.getLogger(), *(logging.getLogger(name) for name in logging.root.manager.loggerDict)]:
            if handler in getattr(logger, "handlers", []):
                logger.removeHandler(handler)
    logging.getLogger().addHandler(RunLogHandler())
    logging.captureWarnings(True)  # warnings.warn goes through logging, to the run
