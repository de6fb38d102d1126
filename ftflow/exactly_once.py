"""Exactly once: lookup -> lease -> create -> record, the one home of it for files and jobs.

Every provider's upload (keyed by content sha256) and job create (keyed by idempotency key)
goes through `ensure_once`:

1. **lookup**: the object may exist already (ledger, then the provider's own list);
2. **lease**: one row per (kind, provider, key) in the ledger's `leases` table, taken with
   `INSERT ... ON CONFLICT` (SQLite and PostgreSQL), renewed by a heartbeat while held, taken
   over when it ran out or its holder's process is dead. Waiters keep looking the object up;
3. **lookup again** under the lease, since the previous holder may just have created it;
4. **create**, with the one retry layer of ftflow: at most `create_attempts` POSTs per call.
   After an outcome we cannot know (5xx, timeout, dropped connection) no second POST is sent
   until the provider's list was polled for `lookup_deadline_seconds` (default 90 s) without
   finding the object, since providers may register it late;
5. **record** the result, then release the lease.

Bound: one call sends at most `create_attempts` creates and lasts at most about
`create_attempts * (request timeout + lookup_deadline_seconds) + sum of backoffs`. Tasks that
call it have no Prefect retries of their own (no stacked retry layers); the SDK's own retries
are off for creates. docs/reliability.md says what this guarantees and under which assumptions.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

from ftflow.settings import Settings, default

if TYPE_CHECKING:  # the providers import this module for `Outcome` alone: no SQLAlchemy for them
    from ftflow.store.ledger import Ledger

T = TypeVar("T")
log = logging.getLogger("ftflow.exactly_once")
JITTER = random.Random()  # not the global generator: a program seeding it gets the same numbers with ftflow
Outcome = Literal["not_done", "unknown", "permanent"]


@dataclass(frozen=True)
class OncePolicy:
    """How hard and how long to try: derived from Settings (`from_settings`), whose defaults (the
    documented bound) these are."""

    create_attempts: int = default("create_attempts")
    backoff_seconds: float = default("backoff_seconds")
    backoff_max_seconds: float = default("backoff_max_seconds")
    lookup_deadline_seconds: float = default("lookup_deadline_seconds")
    lookup_interval_seconds: float = default("lookup_interval_seconds")
    lease_seconds: float = default("lease_seconds")
    lease_wait_seconds: float = default("lease_wait_seconds")

    @classmethod
    def from_settings(cls, settings: Settings) -> OncePolicy:
        return cls(**{name: getattr(settings, name) for name in cls.__dataclass_fields__})


class LeaseTimeout(RuntimeError):
    """Another live process held the lease for longer than `lease_wait_seconds`."""


def process_identity() -> tuple[str, int, str]:
    """(host, pid, process start time): enough to tell later whether this process still lives."""
    return socket.gethostname(), os.getpid(), process_started(os.getpid()) or ""


def process_started(pid: int) -> str | None:
    """The start time of a process (Linux /proc), or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "?"


def owner_is_dead(owner: str) -> bool:
    """An owner string `host:pid:start:nonce` of this host whose process is gone (or reused)."""
    host, pid, started, _ = owner.split(":", 3)
    if host != socket.gethostname():
        return False  # another machine: only its lease expiry can tell
    now = process_started(int(pid))
    return now is None or (now != "?" and started not in ("", "?") and now != started)


def new_owner() -> str:
    host, pid, started = process_identity()
    return f"{host}:{pid}:{started}:{uuid.uuid4().hex[:8]}"


def _take(ledger: Ledger, kind: str, provider: str, key: str, owner: str, seconds: float) -> bool:
    """Take the lease if it is free, ran out, or its holder's process is gone; True if `owner` holds it now."""
    if ledger.try_lease(kind, provider, key, owner, seconds):
        return True
    holder = ledger.lease_holder(kind, provider, key)
    if holder and owner_is_dead(holder["owner"]):
        log.warning("%s %s: the lease holder's process is gone; taking over", kind, key[:12])
        ledger.break_lease(kind, provider, key, holder["owner"])
        return ledger.try_lease(kind, provider, key, owner, seconds)
    return False


@contextmanager
def _renewed(ledger: Ledger, kind: str, provider: str, key: str, owner: str, seconds: float) -> Iterator[None]:
    """Keep a taken lease while the body runs: a heartbeat thread renews it every third of its
    length; it is released at the end (a killed holder's lease runs out, or is broken as dead)."""
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(seconds / 3):
            try:
                ledger.try_lease(kind, provider, key, owner, seconds)
            except Exception:  # noqa: BLE001 - a missed renewal is retried on the next beat
                log.debug("lease renewal failed", exc_info=True)

    beat = threading.Thread(target=heartbeat, name=f"lease-{key[:8]}", daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()
        ledger.release_lease(kind, provider, key, owner)


def _pause(seconds: float) -> None:
    time.sleep(min(1.0, seconds / 10) * (0.5 + JITTER.random()))


@contextmanager
def lease(ledger: Ledger, kind: str, provider: str, key: str, policy: OncePolicy,
          while_waiting: Callable[[], T | None] = lambda: None) -> Iterator[T | None]:
    """Hold the lease on (kind, provider, key); yields what `while_waiting` found instead, if anything."""
    owner = new_owner()
    deadline = time.monotonic() + policy.lease_wait_seconds
    logged = False
    while not _take(ledger, kind, provider, key, owner, policy.lease_seconds):
        if (found := while_waiting()) is not None:
            yield found
            return
        if not logged:
            log.info("%s %s: another run is creating it; waiting", kind, key[:12])
            logged = True
        if time.monotonic() > deadline:
            raise LeaseTimeout(f"{kind} {key[:12]}: another run held the lease for over "
                               f"{policy.lease_wait_seconds:.0f}s")
        _pause(policy.lease_seconds)
    with _renewed(ledger, kind, provider, key, owner, policy.lease_seconds):
        yield None


@contextmanager
def one_of(ledger: Ledger, kind: str, provider: str, slots: int, *, lease_seconds: float,
           wait_seconds: float, on_wait: Callable[[int], None] = lambda held: None) -> Iterator[float]:
    """Hold one of `slots` leases (kind, provider, "0" .. "slots-1"); yields the seconds waited for it.

    While every slot is held by a live process, calls `on_wait(slots held)` once and waits; a
    slot whose holder died (killed, crashed) is taken over. Raises LeaseTimeout after
    `wait_seconds`.
    """
    owner = new_owner()
    started = time.monotonic()
    waiting = False
    while True:
        key = next((str(i) for i in range(slots) if _take(ledger, kind, provider, str(i), owner, lease_seconds)),
                   None)
        if key is not None:
            break
        if not waiting:
            on_wait(slots)
            waiting = True
        if time.monotonic() - started > wait_seconds:
            raise LeaseTimeout(f"{kind}: all {slots} slots stayed taken for over {wait_seconds:.0f}s")
        _pause(lease_seconds)
    with _renewed(ledger, kind, provider, key, owner, lease_seconds):
        yield time.monotonic() - started if waiting else 0.0


def poll_lookup(lookup: Callable[[], T | None], *, seconds: float, interval: float,
                classify: Callable[[BaseException], Outcome]) -> T | None:
    """Look the object up until it appears or `seconds` have passed.

    A lookup that fails transiently (timeout, 429, 5xx) is tried again on the next interval; if
    the last one failed too, its error is raised: absence was never confirmed, so no new create.
    """
    deadline = time.monotonic() + seconds
    while True:
        try:
            if (found := lookup()) is not None:
                return found
            failure = None
        except Exception as exc:
            if classify(exc) == "permanent":
                raise
            log.info("lookup failed (%s); trying again", type(exc).__name__)
            failure = exc
        if time.monotonic() >= deadline:
            if failure is not None:
                raise failure
            return None
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def create_with_retries(create: Callable[[], T], lookup: Callable[[], T | None], *,
                        classify: Callable[[BaseException], Outcome], policy: OncePolicy, what: str) -> T:
    """The one retry layer for creates: backoff after a refusal-free failure, a long lookup after an unknown one."""
    for attempt in range(1, policy.create_attempts + 1):
        try:
            return create()
        except Exception as exc:
            outcome = classify(exc)
            if outcome == "permanent" or attempt == policy.create_attempts:
                raise
            log.warning("%s: %s (attempt %d of %d)", what, type(exc).__name__, attempt, policy.create_attempts)
            if outcome == "unknown":
                found = poll_lookup(lookup, seconds=policy.lookup_deadline_seconds,
                                    interval=policy.lookup_interval_seconds, classify=classify)
                if found is not None:
                    log.info("%s: the provider had carried out the request whose answer was lost", what)
                    return found
            else:
                delay = min(policy.backoff_max_seconds, policy.backoff_seconds * 2 ** (attempt - 1))
                time.sleep(delay * (0.5 + JITTER.random() / 2))
    raise AssertionError("unreachable")


def ensure_once(ledger: Ledger, *, kind: str, provider: str, key: str, lookup: Callable[[], T | None],
                create: Callable[[], T], classify: Callable[[BaseException], Outcome], policy: OncePolicy,
                on_creating: Callable[[], None] = lambda: None, what: str = "") -> tuple[T, bool]:
    """Return (object, created_now): the one object of this key, created by at most one caller."""
    what = what or f"create {kind}"
    if (found := lookup()) is not None:
        return found, False
    with lease(ledger, kind, provider, key, policy, while_waiting=lookup) as found_while_waiting:
        if found_while_waiting is not None:
            return found_while_waiting, False
        if (found := lookup()) is not None:
            return found, False
        on_creating()
        return create_with_retries(create, lookup, classify=classify, policy=policy, what=what), True
