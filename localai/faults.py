"""Fault injection, per operation and seedable: how retries and exactly-once are proven.

A fault plan maps an operation name (`files.create`, `fine_tuning.jobs.create`, ...; `*`
for all) to probabilities of each fault kind. For every request one draw from that
operation's own seeded stream decides:

- `rate_limit`: 429 with `Retry-After` (seconds: `retry_after`), nothing is done;
- `server_error`: 500, 502 or 503, nothing is done;
- `slow`: the reply comes after `slow_seconds` (beyond a short client timeout); the
  operation is still carried out, as on a real overloaded server;
- `lost_response`: the operation is carried out, then the connection drops mid-reply.

A plan can also fail fine-tuning jobs: with `job_error` set, every job created from then on
fails after `validating_files` with exactly that error object (`{"code": "", "message": ""}`
is how a provider that gives no reason answers).

Set it with `FTFLOW_SERVICE_FAULTS` (JSON) at start, or `PUT /_admin/faults` while running
(the SDK never calls `/_admin`). `GET /_admin/faults` returns the plan and what was injected.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from typing import Any, Literal

from pydantic import BaseModel, Field

FaultKind = Literal["rate_limit", "server_error", "slow", "lost_response"]
KINDS: tuple[FaultKind, ...] = ("rate_limit", "server_error", "slow", "lost_response")


class FaultRule(BaseModel):
    rate_limit: float = Field(0.0, ge=0, le=1)
    server_error: float = Field(0.0, ge=0, le=1)
    slow: float = Field(0.0, ge=0, le=1)
    lost_response: float = Field(0.0, ge=0, le=1)
    retry_after: float = Field(0.05, ge=0)
    slow_seconds: float = Field(2.0, ge=0)
    max_faults: int | None = Field(None, ge=0, description="Stop injecting after this many.")


class JobError(BaseModel):
    """The `error` object of a failed fine-tuning job, as the provider returns it."""

    code: str = ""
    message: str = ""
    param: str | None = None


class FaultPlan(BaseModel):
    seed: int = 0
    rules: dict[str, FaultRule] = Field(default_factory=dict)
    job_error: JobError | None = Field(None, description="Jobs created while set fail with this error.")


class FaultInjector:
    def __init__(self, plan: FaultPlan | None = None) -> None:
        self._lock = threading.Lock()
        self.configure(plan or FaultPlan())

    def configure(self, plan: FaultPlan) -> None:
        with self._lock:
            self.plan = plan
            self._randoms: dict[str, random.Random] = {}
            self.injected: Counter[str] = Counter()

    def _random(self, operation: str) -> random.Random:
        """One seeded stream per operation: its draws do not depend on how often others are called."""
        if operation not in self._randoms:
            self._randoms[operation] = random.Random(f"{self.plan.seed}:{operation}")
        return self._randoms[operation]

    def draw(self, operation: str) -> tuple[FaultKind | None, FaultRule | None]:
        """Decide the fault (if any) for one request of an operation."""
        rule = self.plan.rules.get(operation) or self.plan.rules.get("*")
        if rule is None:
            return None, None
        with self._lock:
            spent = sum(n for key, n in self.injected.items() if key.startswith(f"{operation}:"))
            if rule.max_faults is not None and spent >= rule.max_faults:
                return None, rule
            roll = self._random(operation).random()
            threshold = 0.0
            for kind in KINDS:
                threshold += getattr(rule, kind)
                if roll < threshold:
                    self.injected[f"{operation}:{kind}"] += 1
                    return kind, rule
        return None, rule

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {"plan": self.plan.model_dump(), "injected": dict(self.injected)}

    def server_error_status(self) -> int:
        with self._lock:
            return self._random("server_error_status").choice([500, 502, 503])
