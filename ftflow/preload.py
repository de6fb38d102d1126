"""Import what a run will need while Prefect's temporary server boots.

Without PREFECT_API_URL, Prefect starts its server in a subprocess and this process mostly
sleeps for the seconds that takes. Great Expectations alone takes about 2.5 s to import, and
every prepare needs it for its quality gate: importing it on a background thread in those
seconds takes it off the wall clock. Python's per-module import locks make a later import on
the main thread wait for the background one rather than run twice.
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


def preload(*modules: str) -> threading.Thread:
    """Start importing `modules` on a daemon thread; return it."""
    thread = threading.Thread(target=_import, args=(modules,), name="ftflow-preload", daemon=True)
    thread.start()
    return thread
