"""SQLite state of the service: one table of objects by kind, each row the object's JSON.

Wire objects (what the API returns) and internal state (`_sim`, blob paths) live in the
same JSON; `public()` strips the internal keys. Writes are serialised by one lock; reads
happen under it too, which is plenty for a local service.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    parent TEXT,
    data TEXT NOT NULL,
    UNIQUE (kind, id)
);
CREATE INDEX IF NOT EXISTS objects_parent ON objects (kind, parent);
"""


def public(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if not k.startswith("_")}


class Store:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.blob_dir = data_dir / "blobs"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(data_dir / "state.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def put(self, kind: str, obj: dict[str, Any], parent: str | None = None) -> dict[str, Any]:
        with self._lock:
            self._db.execute(
                "INSERT INTO objects (kind, id, parent, data) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (kind, id) DO UPDATE SET data = excluded.data",
                (kind, obj["id"], parent, json.dumps(obj)),
            )
        return obj

    def get(self, kind: str, object_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT data FROM objects WHERE kind = ? AND id = ?", (kind, object_id)).fetchone()
        return json.loads(row[0]) if row else None

    def delete(self, kind: str, object_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM objects WHERE kind = ? AND id = ?", (kind, object_id))

    def list(self, kind: str, parent: str | None = None, newest_first: bool = False) -> list[dict[str, Any]]:
        """All objects of a kind (and parent), in creation order or newest first."""
        order = "DESC" if newest_first else "ASC"
        with self._lock:
            if parent is None:
                rows = self._db.execute(f"SELECT data FROM objects WHERE kind = ? ORDER BY seq {order}", (kind,))
            else:
                rows = self._db.execute(
                    f"SELECT data FROM objects WHERE kind = ? AND parent = ? ORDER BY seq {order}", (kind, parent)
                )
            return [json.loads(r[0]) for r in rows.fetchall()]

    def blob_path(self, blob_id: str) -> Path:
        return self.blob_dir / blob_id

    def close(self) -> None:
        with self._lock:
            self._db.close()
