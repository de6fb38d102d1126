"""How provider errors are classified, and the create-exactly-once loop built on that.

The SDK retries POSTs without an idempotency key, so a request whose answer was lost may
have been carried out. Creates therefore run with SDK retries off, and after any failure that
leaves the outcome unknown we look for the object before trying again.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import openai

from ftflow.errors import ProviderRefused

T = TypeVar("T")
log = logging.getLogger("ftflow.provider")

# Codes with which providers refuse fine-tuning itself: retrying cannot help.
REFUSAL_CODES = {
    "fine_tuning_not_allowed": "this organisation may not create fine-tuning jobs (OpenAI stopped self-serve "
    "fine-tuning; use --backend azure or the local service)",
    "daily_rate_limit_exceeded": "the provider's daily fine-tuning job limit is reached; run again tomorrow "
    "or ask the provider for a higher limit",
    "model_not_available": "this model cannot be fine-tuned by this provider; pick another --model",
    "invalid_api_key": "the API key was refused; check the key in the environment",
}


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: rate limits, server errors, timeouts, dropped connections."""
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return False


def outcome_unknown(exc: BaseException) -> bool:
    """The request may have been carried out although we got no answer."""
    if isinstance(exc, openai.APIConnectionError):
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


def refusal(exc: BaseException) -> ProviderRefused | None:
    """A ProviderRefused for errors that say fine-tuning is not possible, else None."""
    if not isinstance(exc, openai.APIStatusError):
        return None
    code = getattr(exc, "code", None)
    if code in REFUSAL_CODES:
        return ProviderRefused(f"{REFUSAL_CODES[code]} (provider said: {exc.message})")
    if exc.status_code in (401, 403):
        return ProviderRefused(f"the provider refused the request ({exc.status_code}): {exc.message}")
    return None


def retry_on_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry_condition_fn: retry 429/5xx/timeouts, never a 4xx or a refusal."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - the state's exception is what we classify
        return is_transient(exc)
    return False


def create_once(
    lookup: Callable[[], T | None],
    create: Callable[[], T],
    *,
    what: str,
    attempts: int = 6,
    backoff_seconds: float = 0.5,
    grace_seconds: float = 2.0,
) -> tuple[T, bool]:
    """Return (object, created_now). Looks up first; after an unknown outcome, looks again.

    `grace_seconds`: how long to keep looking after an unknown outcome, since a slow server
    may carry the request out after the client gave up.
    """
    for attempt in range(attempts):
        found = lookup()
        if found is not None:
            return found, False
        try:
            return create(), True
        except Exception as exc:
            if (refused := refusal(exc)) is not None:
                raise refused from None
            if not is_transient(exc) or attempt == attempts - 1:
                raise
            log.warning("%s: %s; attempt %d of %d", what, type(exc).__name__, attempt + 1, attempts)
            delay = backoff_seconds * 2**attempt * (1 + random.random() / 2)
            if outcome_unknown(exc):
                deadline = time.monotonic() + max(grace_seconds, delay)
                while time.monotonic() < deadline:
                    if (found := lookup()) is not None:
                        return found, False
                    time.sleep(min(0.25, grace_seconds / 4 or 0.05))
            else:
                time.sleep(delay)
    raise AssertionError("unreachable")
