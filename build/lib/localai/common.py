"""Ids, clock and list pagination shared by the resources."""

from __future__ import annotations

import secrets
import string
import time
from typing import Any

from localai.exceptions import InvalidRequest

ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(ALPHABET) for _ in range(length))


def now() -> int:
    return int(time.time())


def paginate(items: list[dict[str, Any]], *, after: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
    """Cursor pagination as OpenAI does it: the page after the object `after`, and has_more."""
    if limit < 1:
        raise InvalidRequest("limit must be at least 1", param="limit", code="invalid_value")
    start = 0
    if after is not None:
        ids = [item["id"] for item in items]
        if after not in ids:
            raise InvalidRequest(f"No object found with id {after}", param="after", code="invalid_value")
        start = ids.index(after) + 1
    page = items[start : start + limit]
    return page, start + limit < len(items)
