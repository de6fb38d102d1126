"""ftflow/exactly_once.py without a provider: leases on SQLite and PostgreSQL, the retry bound, late registration."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from ftflow.exactly_once import (
    LeaseTimeout,
    OncePolicy,
    create_with_retries,
    ensure_once,
    new_owner,
    one_of,
    owner_is_dead,
)

FAST = OncePolicy(lookup_deadline_seconds=0.5, lookup_interval_seconds=0.05, backoff_seconds=0.01, lease_seconds=2)


class Lost(Exception):
    """A create whose answer never came back."""


class Throttled(Exception):
    """A 429: nothing was done."""


def classify(exc: BaseException):
    return {Lost: "unknown", Throttled: "not_done"}.get(type(exc), "permanent")


class FakeProvider:
    """Creates objects; can lose answers and register objects late, like a slow real provider."""

    def __init__(self, *, lose: int = 0, throttle: int = 0, register_after: float = 0.0) -> None:
        self.created: list[str] = []
        self.visible_at: dict[str, float] = {}
        self.lose, self.throttle, self.register_after = lose, throttle, register_after
        self.lock = threading.Lock()

    def create(self) -> str:
        with self.lock:
            if self.throttle:
                self.throttle -= 1
                raise Throttled()
            time.sleep(0.05)
            name = f"obj-{len(self.created)}"
            self.created.append(name)
            self.visible_at[name] = time.monotonic() + self.register_after
            if self.lose:
                self.lose -= 1
                raise Lost()
            return name

    def lookup(self) -> str | None:
        now = time.monotonic()
        return next((n for n in self.created if self.visible_at[n] <= now), None)


def test_concurrent_callers_create_once(ledger):
    provider, results = FakeProvider(), []

    def call():
        results.append(ensure_once(ledger, kind="job", provider="p", key="k", lookup=provider.lookup,
                                   create=provider.create, classify=classify, policy=FAST))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert provider.created == ["obj-0"] and {r[0] for r in results} == {"obj-0"}
    assert sum(created for _, created in results) == 1
    assert ledger.lease_holder("job", "p", "k") is None  # released


def test_a_lost_answer_is_found_when_the_provider_registers_it_late(ledger):
    provider = FakeProvider(lose=1, register_after=0.3)  # beyond nothing; within the lookup deadline
    found, created = ensure_once(ledger, kind="job", provider="p", key="k", lookup=provider.lookup,
                                 create=provider.create, classify=classify,
                                 policy=OncePolicy(lookup_deadline_seconds=2, lookup_interval_seconds=0.05))
    assert found == "obj-0" and created and provider.created == ["obj-0"]


def test_lookups_that_time_out_after_a_lost_answer_are_tried_again(ledger):
    """The provider is slow to answer the lookups too: they fail for a while, then find the object."""
    provider = FakeProvider(lose=1)
    failures = [Lost(), Throttled(), Lost()]

    def slow_lookup():
        if provider.created and failures:
            raise failures.pop()
        return provider.lookup()

    found, created = ensure_once(ledger, kind="job", provider="p", key="k", lookup=slow_lookup,
                                 create=provider.create, classify=classify, policy=FAST)
    assert found == "obj-0" and created and provider.created == ["obj-0"] and failures == []


def test_a_lost_answer_is_never_created_again_while_lookups_keep_failing():
    provider = FakeProvider(lose=1)

    def failing_lookup():
        raise Lost()

    with pytest.raises(Lost):
        create_with_retries(provider.create, failing_lookup, classify=classify, policy=FAST, what="x")
    assert provider.created == ["obj-0"]  # absence was never confirmed: no second create


def test_creates_are_bounded_by_create_attempts():
    provider = FakeProvider(throttle=10)
    with pytest.raises(Throttled):
        create_with_retries(provider.create, provider.lookup, classify=classify, what="x",
                            policy=OncePolicy(create_attempts=3, backoff_seconds=0.01))
    assert provider.throttle == 7  # three requests, no more


def test_permanent_errors_are_not_retried():
    calls = []

    def refuse():
        calls.append(1)
        raise ValueError("no")

    with pytest.raises(ValueError):
        create_with_retries(refuse, lambda: None, classify=classify, policy=FAST, what="x")
    assert len(calls) == 1


def test_the_lease_of_a_dead_process_is_taken_over_at_once(ledger):
    dead = dead_owner()
    assert owner_is_dead(dead) and not owner_is_dead(new_owner())
    assert ledger.try_lease("job", "p", "k", dead, seconds=3600)
    provider = FakeProvider()
    started = time.monotonic()
    ensure_once(ledger, kind="job", provider="p", key="k", lookup=provider.lookup, create=provider.create,
                classify=classify, policy=FAST)
    assert time.monotonic() - started < 2 and provider.created == ["obj-0"]


def test_an_expired_lease_of_another_host_is_taken_over(ledger):
    other_host = "elsewhere:1:1:abcd"
    assert ledger.try_lease("job", "p", "k", other_host, seconds=2)  # long enough for a loaded machine
    assert not ledger.try_lease("job", "p", "k", new_owner(), seconds=5)
    time.sleep(2.2)
    assert ledger.try_lease("job", "p", "k", new_owner(), seconds=5)


def dead_owner() -> str:
    return subprocess.run([sys.executable, "-c", "from ftflow.exactly_once import new_owner; print(new_owner())"],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_one_of_n_slots_waits_while_live_runs_hold_them_and_takes_over_a_killed_runs_slot(ledger):
    """Job slots: a run killed while holding one (SIGKILL: no release) must not keep it."""
    assert ledger.try_lease("job-slot", "acct", "0", dead_owner(), seconds=3600)
    waits: list[int] = []
    with one_of(ledger, "job-slot", "acct", 2, lease_seconds=5, wait_seconds=5, on_wait=waits.append) as waited:
        assert waited == 0.0 and waits == []  # slot 0 was a dead run's: taken over at once
        with one_of(ledger, "job-slot", "acct", 2, lease_seconds=5, wait_seconds=5) as second:
            assert second == 0.0
            with pytest.raises(LeaseTimeout), one_of(ledger, "job-slot", "acct", 2, lease_seconds=5,
                                                     wait_seconds=0.3, on_wait=waits.append):
                pass
            assert waits == [2]  # said once that both slots are in use
    released: list[float] = []

    def third() -> None:
        with one_of(ledger, "job-slot", "acct", 1, lease_seconds=5, wait_seconds=10) as waited_for:
            released.append(waited_for)

    with one_of(ledger, "job-slot", "acct", 1, lease_seconds=5, wait_seconds=5):
        waiter = threading.Thread(target=third)
        waiter.start()
        time.sleep(0.5)
        assert released == []  # the one slot is held by a live run: the third waits
    waiter.join(timeout=10)
    assert len(released) == 1 and released[0] > 0.3


def test_upserts_update_in_place(ledger):
    ledger.record_job("p", "k", status="creating", family="f", generation=0, flow_run_id="r1")
    ledger.record_job("p", "k", status="running", job_id="job-1")
    entry = ledger.job_entry("p", "k")
    assert (entry["status"], entry["job_id"], entry["family"], entry["flow_run_id"]) == ("running", "job-1", "f", "r1")
    ledger.record_file("p", "s" * 64, "fine-tune", "file-1")
    ledger.record_file("p", "s" * 64, "fine-tune", "file-2")
    assert ledger.find_file("p", "s" * 64, "fine-tune") == "file-2"
