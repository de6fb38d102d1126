"""Upload: content-addressed, exactly-once uploads of the training and validation files.

A file is named `ftflow-<sha256>.jsonl` at the provider, so equal content can be found again
both through the local ledger and through the provider's own file list, whatever happened
to the ledger. The upload itself goes through ftflow/exactly_once.py (lease per content sha);
files over `upload_part_bytes` go in parts, and a retry or re-run resumes from the parts the
provider already accepted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import task

from ftflow.caching import RUN_CACHE
from ftflow.errors import UploadRejected
from ftflow.exactly_once import OncePolicy, ensure_once
from ftflow.jsonl import file_sha256
from ftflow.providers.base import PURPOSE, Provider, RemoteFile, provider_filename
from ftflow.run_resources import RunResources
from ftflow.settings import Settings
from ftflow.store.ledger import Ledger

log = logging.getLogger("ftflow.upload")


@dataclass
class UploadedFile:
    file_id: str
    sha256: str
    bytes: int | None
    reused: bool


@dataclass
class LedgerUploadProgress:
    """The parts of an open multi-part upload, kept in the ledger (see `UploadProgress`)."""

    ledger: Ledger
    provider: str
    sha256: str

    def load(self) -> dict[str, Any] | None:
        return self.ledger.open_upload(self.provider, self.sha256)

    def save(self, *, upload_id: str, part_bytes: int, part_ids: list[str], expires_at: float) -> None:
        self.ledger.save_upload(self.provider, self.sha256, upload_id=upload_id, part_bytes=part_bytes,
                                  part_ids=part_ids, expires_at=expires_at)

    def drop(self) -> None:
        self.ledger.drop_upload(self.provider, self.sha256)


def find_existing(provider: Provider, ledger: Ledger, sha256: str) -> RemoteFile | None:
    """A usable provider file with this content: from the ledger, else from the file list."""
    file_id = ledger.find_file(provider.identity, sha256, PURPOSE)
    if file_id and (file := provider.get_file(file_id)) is not None and file.state not in ("error", "deleted"):
        return file
    return provider.find_file(provider_filename(sha256))


def wait_processed(provider: Provider, file_id: str, *, timeout: float, interval: float = 0.2) -> RemoteFile:
    """Wait until the provider processed the file; raise UploadRejected with its reason."""
    deadline = time.monotonic() + timeout
    while True:
        file = provider.get_file(file_id)
        if file is None:
            raise UploadRejected(f"{file_id} disappeared at the provider before it was processed")
        if file.state == "processed":
            return file
        if file.state in ("error", "deleted"):
            raise UploadRejected(f"the provider rejected {file.filename} ({file_id}): {file.detail}")
        if time.monotonic() > deadline:
            raise UploadRejected(f"{file_id} was not processed within {timeout:.0f}s (status {file.provider_status})")
        time.sleep(interval)


def ensure_uploaded(provider: Provider, ledger: Ledger, path: Path, *, policy: OncePolicy,
                    timeout: float = 600) -> UploadedFile:
    """Return the provider file holding exactly this content (in the provider's format), uploading it at most once."""
    path = provider.rendered(path)
    sha256 = file_sha256(path)
    with provider.explained():
        file, created = ensure_once(
            ledger, kind="file", provider=provider.identity, key=sha256,
            lookup=lambda: find_existing(provider, ledger, sha256),
            create=lambda: provider.upload_file(path, provider_filename(sha256),
                                                progress=LedgerUploadProgress(ledger, provider.identity, sha256)),
            classify=provider.outcome, policy=policy, what=f"upload {path.name}",
        )
        ledger.record_file(provider.identity, sha256, PURPOSE, file.id)
        file = wait_processed(provider, file.id, timeout=timeout)
    log.info("%s %s as %s", "uploaded" if created else "reused", path.name, file.id)
    return UploadedFile(file_id=file.id, sha256=sha256, bytes=file.bytes, reused=not created)


# No Prefect retries: ftflow/exactly_once.py is the one retry layer of creates.
@task(name="upload-file", cache_policy=RUN_CACHE)
def upload_file(path: str, settings: Settings, resources: RunResources) -> UploadedFile | None:
    """Return the provider file for this dataset file (uploaded now or reused); None if empty."""
    if Path(path).stat().st_size == 0:
        return None
    return ensure_uploaded(resources.provider, resources.ledger, Path(path), policy=OncePolicy.from_settings(settings))
