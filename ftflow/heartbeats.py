"""A flow run ends without waiting out the second its heartbeat thread sleeps.

Prefect sends a flow run's heartbeats (the server marks a run whose heartbeats stop as crashed;
every 180 s by default, `PREFECT_FLOWS_HEARTBEAT_FREQUENCY`) from a daemon thread that sleeps in
steps of one second, checking a stop flag between them. Prefect's synchronous engine joins that
thread when the run ends, so every flow run's end waited for the step under way: half a second
on average, up to a whole one (a 20-line `prepare`, a run of a few seconds, waited 0.6 s of its
end there). Its asynchronous engine does not join the thread (`join_on_exit=False`);
`stop_heartbeats_without_waiting` makes the synchronous one do the same. The heartbeats are those
Prefect sends; the stopped thread returns at its next check, sending none after the flag is set
(it checks the run's state and the flag before each). Installed once, when the flows are imported.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any


def stop_heartbeats_without_waiting() -> None:
    """Have Prefect's synchronous flow engine leave its heartbeat thread to end on its own.

    Left as Prefect has it if its heartbeat context is not the one this was written for
    (`prefect.flow_engine._send_heartbeats(engine, join_on_exit=True)`).
    """
    from prefect import flow_engine

    original = getattr(flow_engine, "_send_heartbeats", None)
    if original is None or getattr(original, "ftflow_unjoined", False):
        return
    try:
        parameters = inspect.signature(original).parameters
    except (TypeError, ValueError):
        return
    if list(parameters) != ["engine", "join_on_exit"]:
        return

    @contextlib.contextmanager
    def send_heartbeats(engine: Any, join_on_exit: bool = True) -> Iterator[None]:  # noqa: ARG001 - never joined
        with original(engine, join_on_exit=False):
            yield

    send_heartbeats.ftflow_unjoined = True  # type: ignore[attr-defined]
    send_heartbeats.__wrapped__ = original  # type: ignore[attr-defined]
    flow_engine._send_heartbeats = send_heartbeats
