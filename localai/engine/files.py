"""Files: upload, list, retrieve, delete, content; fine-tune files are checked as OpenAI does."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from localai.common import new_id, now, paginate
from localai.engine.training_data import check_file
from localai.exceptions import InvalidRequest, NotFound
from localai.store import Store, public

PURPOSES = {"assistants", "batch", "fine-tune", "vision", "user_data", "evals"}


def too_large(size: int, limit: int, param: str = "file") -> InvalidRequest:
    return InvalidRequest(
        f"File is too large: more than {limit} bytes ({size} received so far); the maximum is {limit} bytes. "
        "Use the Uploads API for larger files.",
        param=param,
        code="file_too_large",
    )


INCOMING = "incoming-"  # an upload being received; a File once complete


class FilesBackend:
    def __init__(self, store: Store, max_file_bytes: int) -> None:
        self.store = store
        self.max_file_bytes = max_file_bytes

    def create_file(self, *, filename: str, purpose: str, path: Path) -> dict[str, Any]:
        """A new File from an upload already streamed to `path` (moved into the store, or deleted)."""
        try:
            if purpose not in PURPOSES:
                raise InvalidRequest(f"'{purpose}' is not one of {sorted(PURPOSES)} - 'purpose'", param="purpose")
            if path.stat().st_size > self.max_file_bytes:
                raise too_large(path.stat().st_size, self.max_file_bytes)
            if purpose == "fine-tune" and not filename.endswith(".jsonl"):
                raise InvalidRequest(
                    "Invalid file format for Fine-Tuning API. Must be .jsonl", param="file", code="invalid_file_format"
                )
        except InvalidRequest:
            path.unlink(missing_ok=True)
            raise
        return self.store_path(filename=filename, purpose=purpose, path=path)

    def incoming_path(self) -> Path:
        """Where an upload in progress is written before it becomes a File (named by this process)."""
        return self.store.blob_dir / f"{INCOMING}{os.getpid()}-{uuid.uuid4().hex}"

    def remove_abandoned_uploads(self) -> list[Path]:
        """Remove the incoming blobs of uploads whose service process is gone (killed mid-upload);
        return them. Only names this service gives are touched; a live process's uploads stay."""
        removed = []
        for path in self.store.blob_dir.glob(f"{INCOMING}*"):
            owner = path.name.removeprefix(INCOMING).split("-")[0]
            if not owner.isdigit() or not process_alive(int(owner)):  # no pid: an older service's name
                path.unlink(missing_ok=True)
                removed.append(path)
        return removed

    def store_file(self, *, filename: str, purpose: str, content: bytes) -> dict[str, Any]:
        """A new File from bytes in hand (small files the service writes itself)."""
        path = self.incoming_path()
        path.write_bytes(content)
        return self.store_path(filename=filename, purpose=purpose, path=path)

    def store_path(self, *, filename: str, purpose: str, path: Path) -> dict[str, Any]:
        """Move `path` into the store as a new File; fine-tune files are checked line by line."""
        file_id = new_id("file-")
        blob = self.store.blob_path(file_id)
        os.replace(path, blob)
        status, details = "processed", None
        if purpose == "fine-tune":
            _, reason = check_file(blob)
            if reason:
                status, details = "error", reason
        record = {
            "id": file_id,
            "object": "file",
            "bytes": blob.stat().st_size,
            "created_at": now(),
            "filename": filename,
            "purpose": purpose,
            "status": status,
        }
        if details is not None:  # the spec types it as a string: absent rather than null
            record["status_details"] = details
        return public(self.store.put("file", record))

    def get(self, file_id: str) -> dict[str, Any]:
        record = self.store.get("file", file_id)
        if record is None:
            raise NotFound.missing("File", file_id, param="file_id")
        return record

    def retrieve_file(self, file_id: str) -> dict[str, Any]:
        return public(self.get(file_id))

    def list_files(self, *, purpose: str | None, limit: int, after: str | None, order: str) -> dict[str, Any]:
        if order not in {"asc", "desc"}:
            raise InvalidRequest("order must be 'asc' or 'desc'", param="order")
        files = [public(f) for f in self.store.list("file", newest_first=order == "desc")]
        if purpose:
            files = [f for f in files if f["purpose"] == purpose]
        page, has_more = paginate(files, after=after, limit=limit)
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": has_more,
        }

    def delete_file(self, file_id: str) -> dict[str, Any]:
        self.get(file_id)
        self.store.delete("file", file_id)
        self.store.blob_path(file_id).unlink(missing_ok=True)
        return {"id": file_id, "object": "file", "deleted": True}

    def content_path(self, file_id: str) -> Path:
        """The file's bytes on disk, as uploaded."""
        self.get(file_id)
        return self.store.blob_path(file_id)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
