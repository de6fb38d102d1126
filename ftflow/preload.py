"""Import what a run will need while Prefect's temporary server boots.

Without PREFECT_API_URL, a temporary Prefect server boots in a subprocess (ftflow/prefect_api.py)
while this process imports its flows and then waits. Great Expectations alone takes about 2.5 s
to import, and every prepare needs it for its quality gate: importing it on a background thread
in those seconds takes it off the wall clock. (With a running server there is no wait to fill;
the import then starts when the flow does, not to slow down the flow's own imports.)
Python's per-module import locks make a later import on the main thread wait for the
background one rather than run twice.
"""

from __future__ import annotations

import importlib
import logging
import threading

log = logging.getLogger(__name__)


def _import(modules: tuple[str, ...]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the main thread's own import will report it
            log.debug("preloading %s failed", name, exc_info=True)


_started: set[str] = set()


def preload(*modules: str) -> None:
    """Start importing `modules` on a daemon thread, unless that was started already."""
    modules = tuple(name for name in modules if name not in _started)
    if modules:
        _started.update(modules)
        threading.Thread(target=_import, args=(modules,), name="ftflow-preload", daemon=True).start()
