"""Which lease keeps creates exactly once, and recovers from a killed holder: the registry or Prefect?

Two mechanisms for "one creator per idempotency key" (issue 10):
- `registry`: ftflow/exactly_once.py's lease row (`INSERT ... ON CONFLICT`, heartbeat, takeover when
  the holder's process is dead or its lease ran out), on SQLite here;
- `prefect`: a Prefect global concurrency limit of 1 named after the key
  (`prefect.concurrency.sync.concurrency`, lease_duration 60 s: the shortest Prefect accepts).

For each: WORKERS processes race for one key (lookup, lock, lookup again, "create" = append a
line, release): how many creates? Then a holder SIGKILLs itself while holding the lock: how long
until a waiter gets it? Prints one row per mechanism.

    .venv/bin/python bench/lease_sturdiness.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

WORKERS = 6
LEASE_SECONDS = 30
PREFECT_LEASE_SECONDS = 60  # the shortest lease Prefect's API accepts
GIVE_UP_SECONDS = 180
ROOT = Path(__file__).resolve().parent.parent

WORKER = textwrap.dedent('''
    import os, signal, sys, time
    sys.path.insert(0, {root!r})
    mechanism, key, created, mode = sys.argv[1:5]
    from contextlib import contextmanager

    @contextmanager
    def locked():
        if mechanism == "registry":
            from ftflow.exactly_once import OncePolicy, lease
            from ftflow.store.ledger import Ledger
            ledger = Ledger({registry!r})
            with lease(ledger, "bench", "p", key, OncePolicy(lease_seconds={lease})):
                yield
        else:
            from prefect.concurrency.sync import concurrency
            with concurrency(key, occupy=1, strict=True, lease_duration={prefect_lease}):
                yield

    def exists():
        return os.path.exists(created) and open(created).read().strip() != ""

    if mode == "race":
        if not exists():
            with locked():
                if not exists():
                    time.sleep(0.3)  # the create request
                    with open(created, "a") as f:
                        f.write(f"{{os.getpid()}}\\n")
    elif mode == "die":
        with locked():
            print("holding", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    else:  # wait: report how long the lock took
        started = time.monotonic()
        with locked():
            print(f"{{time.monotonic() - started:.2f}}", flush=True)
''')


def run(mechanism: str, folder: Path, env: dict, registry: str) -> tuple[int, str]:
    script = folder / "worker.py"
    script.write_text(WORKER.format(root=str(ROOT), registry=registry, lease=LEASE_SECONDS,
                                    prefect_lease=PREFECT_LEASE_SECONDS))
    key = f"bench-{uuid.uuid4().hex[:8]}"
    if mechanism == "prefect":
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

        with get_client(sync_client=True) as client:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=key, limit=1))
    created = folder / f"{key}.created"
    racers = [subprocess.Popen([sys.executable, str(script), mechanism, key, str(created), "race"], env=env)
              for _ in range(WORKERS)]
    for racer in racers:
        racer.wait(300)
    creates = len(created.read_text().split()) if created.exists() else 0

    key2 = key + "-kill"
    if mechanism == "prefect":
        with get_client(sync_client=True) as client:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=key2, limit=1))
    holder = subprocess.Popen([sys.executable, str(script), mechanism, key2, str(created), "die"], env=env,
                              stdout=subprocess.PIPE, text=True)
    holder.stdout.readline()
    holder.wait(60)
    waiter = subprocess.Popen([sys.executable, str(script), mechanism, key2, str(created), "wait"], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        waited = waiter.communicate(timeout=GIVE_UP_SECONDS)[0].strip() + " s"
    except subprocess.TimeoutExpired:
        waiter.kill()
        waited = f"> {GIVE_UP_SECONDS} s (gave up)"
    return creates, waited


def main() -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.settings import get_current_settings
    from prefect.testing.utilities import prefect_test_harness

    with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=600):
        folder = Path(tmp)
        env = {**os.environ, "PREFECT_API_URL": str(get_current_settings().api.url)}
        registry = f"sqlite:///{folder / 'registry.sqlite3'}"
        print(f"{WORKERS} racing processes per mechanism; lease {LEASE_SECONDS} s "
              f"(Prefect: {PREFECT_LEASE_SECONDS} s); holder SIGKILLed while holding")
        print(f"{'mechanism':<10} {'creates':>8}  waiter got the lock after the holder died")
        for mechanism in ("registry", "prefect"):
            started = time.monotonic()
            creates, waited = run(mechanism, folder, env, registry)
            print(f"{mechanism:<10} {creates:>8}  {waited}   ({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
