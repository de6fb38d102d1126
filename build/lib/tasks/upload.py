"""Upload: content-addressed, exactly-once uploads of the training and validation files.

A file is named `ftflow-<sha256>.jsonl` at the provider, so equal content can be found again
both through the local ledger and through the provider's own file list, whatever happened
to the ledger. Files over `upload_part_bytes` go through the Uploads API in parts.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
from prefect import task

from ftflow.caching import RUN_CACHE
from ftflow.client import describe, make_client
from ftflow.errors import UploadRejected
from ftflow.jsonl import file_sha256
from ftflow.provider import create_once, retry_on_transient
from ftflow.settings import Settings
from tasks.registry import Registry

log = logging.getLogger("ftflow.upload")
PURPOSE = "fine-tune"


def provider_filename(sha256: str) -> str:
    return f"ftflow-{sha256}.jsonl"


@dataclass
class UploadedFile:
    file_id: str
    sha256: str
    bytes: int
    reused: bool


def find_existing(client: openai.OpenAI, registry: Registry, provider: str, sha256: str) -> Any | None:
    """A usable provider file with this content: from the ledger, else from the file list."""
    file_id = registry.find_file(provider, sha256, PURPOSE)
    if file_id:
        try:
            file = client.files.retrieve(file_id)
            if file.status != "error":
                return file
        except openai.NotFoundError:
            pass  # deleted at the provider: look further
    name = provider_filename(sha256)
    for file in client.files.list(purpose=PURPOSE):
        if file.filename == name and file.status != "error":
            return file
    return None


def upload_content(client: openai.OpenAI, path: Path, sha256: str, part_bytes: int) -> Any:
    """One request for small files; the Uploads API in parts for large ones."""
    size = path.stat().st_size
    name = provider_filename(sha256)
    if size <= part_bytes:
        with open(path, "rb") as f:
            return client.files.create(file=(name, f.read()), purpose=PURPOSE)
    md5 = hashlib.md5()
    upload = client.uploads.create(bytes=size, filename=name, mime_type="text/jsonl", purpose=PURPOSE)
    part_ids = []
    with open(path, "rb") as f:
        while chunk := f.read(part_bytes):
            md5.update(chunk)
            part_ids.append(client.uploads.parts.create(upload_id=upload.id, data=chunk).id)
    return client.uploads.complete(upload_id=upload.id, part_ids=part_ids, md5=md5.hexdigest()).file


def wait_processed(client: openai.OpenAI, file_id: str, *, timeout: float, interval: float = 0.2) -> Any:
    """Wait until the provider processed the file; raise UploadRejected with its reason."""
    deadline = time.monotonic() + timeout
    while True:
        file = client.files.retrieve(file_id)
        if file.status == "processed":
            return file
        if file.status == "error":
            raise UploadRejected(f"the provider rejected {file.filename} ({file_id}): {file.status_details}")
        if time.monotonic() > deadline:
            raise UploadRejected(f"{file_id} was not processed within {timeout:.0f}s (status {file.status})")
        time.sleep(interval)


def ensure_uploaded(client: openai.OpenAI, registry: Registry, provider: str, path: Path, *,
                    part_bytes: int, timeout: float = 600) -> UploadedFile:
    """Return the provider file holding exactly this content, uploading it at most once."""
    sha256 = file_sha256(path)
    creator = client.with_options(max_retries=0)
    file, created = create_once(
        lambda: find_existing(client, registry, provider, sha256),
        lambda: upload_content(creator, path, sha256, part_bytes),
        what=f"upload {path.name}",
    )
    registry.record_file(provider, sha256, PURPOSE, file.id)
    file = wait_processed(client, file.id, timeout=timeout)
    log.info("%s %s as %s", "uploaded" if created else "reused", path.name, file.id)
    return UploadedFile(file_id=file.id, sha256=sha256, bytes=file.bytes, reused=not created)


@task(name="upload-file", cache_policy=RUN_CACHE, retries=3, retry_delay_seconds=[2, 10, 30],
      retry_jitter_factor=0.5, retry_condition_fn=retry_on_transient)
def upload_file(path: str, settings: Settings) -> UploadedFile | None:
    """Return the provider file for this dataset file (uploaded now or reused); None if empty."""
    if Path(path).stat().st_size == 0:
        return None
    client = make_client(settings)
    return ensure_uploaded(client, Registry(settings.registry_url), describe(settings, client), Path(path),
                           part_bytes=settings.upload_part_bytes)
