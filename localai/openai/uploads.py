"""Uploads: large files in parts (<= 64 MB each), assembled in `part_ids` order on complete."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from localai.common import new_id, now
from localai.engine.files import PURPOSES, FilesBackend, too_large
from localai.exceptions import InvalidRequest, NotFound
from localai.store import Store, public

MAX_PART_BYTES = 64 * 1024 * 1024
MAX_UPLOAD_BYTES = 8 * 1024 * 1024 * 1024
EXPIRES_AFTER_SECONDS = 3600
CHUNK_BYTES = 1024 * 1024


class UploadsBackend:
    def __init__(self, store: Store, files: FilesBackend) -> None:
        self.store = store
        self.files = files

    def _pending(self, upload_id: str) -> dict[str, Any]:
        upload = self.store.get("upload", upload_id)
        if upload is None:
            raise NotFound.missing("Upload", upload_id, param="upload_id")
        if upload["status"] == "pending" and now() >= upload["expires_at"]:
            upload["status"] = "expired"
            self.store.put("upload", upload)
        if upload["status"] != "pending":
            raise InvalidRequest(f"Upload {upload_id} is {upload['status']}, not pending", param="upload_id")
        return upload

    def create_upload(self, *, filename: str, purpose: str, bytes: int, mime_type: str) -> dict[str, Any]:
        if purpose not in PURPOSES:
            raise InvalidRequest(f"'{purpose}' is not a valid purpose", param="purpose")
        if not 0 < bytes <= MAX_UPLOAD_BYTES:
            raise InvalidRequest(f"bytes must be between 1 and {MAX_UPLOAD_BYTES}", param="bytes")
        if purpose == "fine-tune" and mime_type != "text/jsonl":
            raise InvalidRequest("mime_type must be text/jsonl for fine-tune uploads", param="mime_type")
        created = now()
        upload = {
            "id": new_id("upload_"),
            "object": "upload",
            "bytes": bytes,
            "created_at": created,
            "filename": filename,
            "purpose": purpose,
            "status": "pending",
            "expires_at": created + EXPIRES_AFTER_SECONDS,
            "file": None,
        }
        return public(self.store.put("upload", upload))

    def add_upload_part(self, upload_id: str, path: Path) -> dict[str, Any]:
        """A part from data already streamed to `path` (at most MAX_PART_BYTES, see routes)."""
        try:
            self._pending(upload_id)
            if path.stat().st_size > MAX_PART_BYTES:
                raise too_large(path.stat().st_size, MAX_PART_BYTES, param="data")
        except (InvalidRequest, NotFound):
            path.unlink(missing_ok=True)
            raise
        part = {"id": new_id("part_"), "object": "upload.part", "created_at": now(), "upload_id": upload_id}
        path.replace(self.store.blob_path(part["id"]))
        return public(self.store.put("upload.part", part, parent=upload_id))

    def complete_upload(self, upload_id: str, *, part_ids: list[str], md5: str | None) -> dict[str, Any]:
        upload = self._pending(upload_id)
        known = {p["id"] for p in self.store.list("upload.part", parent=upload_id)}
        unknown = [p for p in part_ids if p not in known]
        if unknown or not part_ids:
            raise InvalidRequest(f"Unknown part ids for this upload: {unknown}", param="part_ids")
        size = sum(self.store.blob_path(p).stat().st_size for p in part_ids)
        if size != upload["bytes"]:
            raise InvalidRequest(
                f"The upload declared {upload['bytes']} bytes but the parts hold {size}", param="part_ids"
            )
        assembled, digest = self.files.incoming_path(), hashlib.md5()
        with open(assembled, "wb") as out:  # part by part, in chunks: an 8 GB upload never sits in memory
            for part_id in part_ids:
                with open(self.store.blob_path(part_id), "rb") as part:
                    while chunk := part.read(CHUNK_BYTES):
                        digest.update(chunk)
                        out.write(chunk)
        if md5 and digest.hexdigest() != md5:
            assembled.unlink()
            raise InvalidRequest("md5 checksum does not match the uploaded parts", param="md5")
        file = self.files.store_path(filename=upload["filename"], purpose=upload["purpose"], path=assembled)
        for part in known:
            self.store.blob_path(part).unlink(missing_ok=True)
        upload.update(status="completed", file=file)
        return public(self.store.put("upload", upload))

    def cancel_upload(self, upload_id: str) -> dict[str, Any]:
        upload = self._pending(upload_id)
        upload["status"] = "cancelled"
        return public(self.store.put("upload", upload))
