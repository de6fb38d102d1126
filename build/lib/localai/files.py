"""Files: upload, list, retrieve, delete, content; fine-tune files are checked as OpenAI does."""

from __future__ import annotations

import json
from typing import Any

from localai.common import new_id, now, paginate
from localai.exceptions import InvalidRequest, NotFound
from localai.store import Store, public

PURPOSES = {"assistants", "batch", "fine-tune", "vision", "user_data", "evals"}
MIN_EXAMPLES = 10


def check_fine_tune_jsonl(content: bytes, *, min_examples: int = 0) -> tuple[int, str | None]:
    """Return (examples, None) for a valid chat fine-tuning file, or (n, reason) otherwise.

    File processing checks the format; a job checks the training file's size too.
    """
    examples = 0
    for number, raw in enumerate(content.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return examples, f"Invalid file format. Line {number} is not valid JSON."
        messages = record.get("messages") if isinstance(record, dict) else None
        if not isinstance(messages, list) or not messages:
            return examples, f"Invalid file format. Example {number}: missing 'messages'."
        for message in messages:
            if not isinstance(message, dict) or message.get("role") not in {"system", "user", "assistant", "tool"}:
                return examples, f"Invalid file format. Example {number}: invalid role."
        if not any(m["role"] == "assistant" for m in messages):
            return examples, f"Invalid file format. Example {number}: no assistant message."
        examples += 1
    if examples < min_examples:
        return examples, f"Training file has {examples} example(s), but must have at least {min_examples} examples."
    return examples, None


class FilesBackend:
    def __init__(self, store: Store, max_file_bytes: int) -> None:
        self.store = store
        self.max_file_bytes = max_file_bytes

    def create_file(self, *, filename: str, purpose: str, content: bytes) -> dict[str, Any]:
        if purpose not in PURPOSES:
            raise InvalidRequest(f"'{purpose}' is not one of {sorted(PURPOSES)} - 'purpose'", param="purpose")
        if len(content) > self.max_file_bytes:
            raise InvalidRequest(
                f"File is too large: {len(content)} bytes, the maximum is {self.max_file_bytes} bytes. "
                "Use the Uploads API for larger files.",
                param="file",
                code="file_too_large",
            )
        if purpose == "fine-tune" and not filename.endswith(".jsonl"):
            raise InvalidRequest(
                "Invalid file format for Fine-Tuning API. Must be .jsonl", param="file", code="invalid_file_format"
            )
        return self.store_file(filename=filename, purpose=purpose, content=content)

    def store_file(self, *, filename: str, purpose: str, content: bytes) -> dict[str, Any]:
        file_id = new_id("file-")
        self.store.blob_path(file_id).write_bytes(content)
        status, details = "processed", None
        if purpose == "fine-tune":
            _, reason = check_fine_tune_jsonl(content)
            if reason:
                status, details = "error", reason
        record = {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
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

    def file_content(self, file_id: str) -> bytes:
        self.get(file_id)
        return self.store.blob_path(file_id).read_bytes()
