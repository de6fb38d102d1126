"""Waiting for a temporary server to store the task runs a command sent (ftflow/prefect_api.py)."""

from __future__ import annotations

import pytest

from ftflow.prefect_api import BOUND_S, IDLE_S, SETTLE_S, wait_until_stored


class Clock:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def reads(clock: Clock, timeline: list[tuple[float, list[tuple[str, str]]]]):
    """What the server holds over time: each entry from its time on."""
    def read() -> list[tuple[str, str]]:
        return next(pairs for since, pairs in reversed(timeline) if clock.now >= since)
    return read


def test_returns_once_every_task_run_is_final_and_nothing_changed_for_the_settling_time():
    clock = Clock()
    read = reads(clock, [(0.0, [("a", "COMPLETED"), ("b", "RUNNING")]),
                         (0.5, [("a", "COMPLETED"), ("b", "COMPLETED")]),
                         (0.6, [("a", "COMPLETED"), ("b", "COMPLETED"), ("c", "PENDING")]),
                         (0.7, [("a", "COMPLETED"), ("b", "COMPLETED"), ("c", "FAILED")])])

    assert wait_until_stored(read, clock=clock, sleep=clock.sleep) == []
    assert 0.7 + SETTLE_S <= clock.now < 0.7 + SETTLE_S + 0.1  # not before the last change had settled


def test_a_task_run_that_stays_unfinished_is_given_up_on_once_nothing_changes():
    clock = Clock()
    read = reads(clock, [(0.0, [("a", "COMPLETED"), ("b", "RUNNING")])])

    assert wait_until_stored(read, clock=clock, sleep=clock.sleep) == ["b"]
    assert IDLE_S <= clock.now < IDLE_S + 0.1


def test_a_server_that_keeps_changing_is_waited_for_no_longer_than_the_bound():
    clock = Clock()

    def read() -> list[tuple[str, str]]:  # a new pending task run at each look
        return [(f"t{int(clock.now * 100)}", "PENDING")]

    assert len(wait_until_stored(read, clock=clock, sleep=clock.sleep)) == 1
    assert BOUND_S <= clock.now < BOUND_S + 0.1


@pytest.mark.parametrize("pairs", [[], [("a", "CANCELLED"), ("b", "CRASHED")]])
def test_nothing_or_only_final_states_settle_at_once(pairs):
    clock = Clock()

    assert wait_until_stored(lambda: pairs, clock=clock, sleep=clock.sleep) == []
    assert clock.now < SETTLE_S + 0.1


def test_a_server_is_stopped_even_when_the_waits_before_its_stop_are_interrupted(monkeypatch):
    from ftflow import prefect_api

    class Server:
        booting = False
        left = False

        def leave(self) -> None:
            self.left = True

    def interrupted() -> None:
        raise KeyboardInterrupt  # a second Ctrl-C while the last logs and events are sent

    monkeypatch.setattr(prefect_api, "_drain_prefect_workers", interrupted)
    api = prefect_api.PrefectApi(Server(), announce=lambda: None)
    api.connected = True
    with pytest.raises(KeyboardInterrupt):
        api.close()
    assert api.server.left
