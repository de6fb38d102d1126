"""A flow run's heartbeats (ftflow/heartbeats.py): sent as Prefect sends them, their thread left to end on its own."""

from __future__ import annotations

import logging
import threading

from prefect import flow_engine

import flows  # noqa: F401 - installs it, as importing the flows does


class Engine:
    """What Prefect's heartbeat context uses of a flow run engine; counts the heartbeats sent."""

    heartbeat_seconds = 30
    flow_run = None
    logger = logging.getLogger("test-heartbeats")

    def __init__(self) -> None:
        self.sent = threading.Semaphore(0)
        self.count = 0

    def _build_heartbeat_event_template(self):
        return {}, []

    def _emit_flow_run_heartbeat(self, resource, related):
        self.count += 1
        self.sent.release()


def test_the_flows_install_it_over_prefects_own():
    assert getattr(flow_engine._send_heartbeats, "ftflow_unjoined", False)


def test_a_heartbeat_is_sent_and_the_runs_end_does_not_wait_for_the_thread(monkeypatch):
    engine = Engine()
    before = set(threading.enumerate())
    join = threading.Thread.join
    joined: list[threading.Thread] = []
    monkeypatch.setattr(threading.Thread, "join", lambda self, timeout=None: joined.append(self))
    with flow_engine._send_heartbeats(engine):  # the call Prefect's synchronous engine makes
        assert engine.sent.acquire(timeout=30)  # the first heartbeat, as the run starts
        (thread,) = set(threading.enumerate()) - before
    assert thread not in joined  # the run's end did not wait for it (Prefect's own joins it here)
    join(thread, timeout=30)
    assert not thread.is_alive()  # it saw the stop flag and ended on its own
    assert engine.count == 1  # and sent nothing after the run's end
