"""The ledger: what ftflow made at a provider, so it makes each thing exactly once.

Tables (the same names and columns as ever, so existing databases keep working):
- `uploaded_files`: (provider, sha256, purpose) -> file id, so equal content is uploaded once;
- `multipart_uploads`: (provider, sha256) -> an open Uploads session and the parts it accepted;
- `fine_tuning_jobs`: (provider, idempotency key) -> job id, its state in ftflow's lifecycle,
  the polling deadline and the last event logged (kept across task retries and re-runs);
- `leases`: (kind, provider, key) -> who may create that object now (see ftflow/exactly_once.py);
- `deployments`: (provider, model) -> the name a model answers under (Azure deployments).
`provider` is a provider's identity (backend and URL, no key: ftflow/providers/base.py).
"""

from __future__ import annotations

import json
import time
from typing import Any

import sqlalchemy as sa

from ftflow.store.database import open_tables, upsert

metadata = sa.MetaData()

uploaded_files = sa.Table(
    "uploaded_files", metadata,
    sa.Column("provider", sa.String(500), primary_key=True),
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("purpose", sa.String(40), primary_key=True),
    sa.Column("file_id", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

multipart_uploads = sa.Table(
    "multipart_uploads", metadata,
    sa.Column("provider", sa.String(500), primary_key=True),
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("upload_id", sa.String(200), nullable=False),
    sa.Column("part_bytes", sa.Integer, nullable=False),
    sa.Column("part_ids", sa.Text, nullable=False),  # JSON list, in order
    sa.Column("expires_at", sa.Float, nullable=False),
)

fine_tuning_jobs = sa.Table(
    "fine_tuning_jobs", metadata,
    sa.Column("provider", sa.String(500), primary_key=True),
    sa.Column("idempotency_key", sa.String(64), primary_key=True),
    sa.Column("job_id", sa.String(200)),  # NULL while the create call is in flight
    sa.Column("flow_run_id", sa.String(64)),
    sa.Column("status", sa.String(40), nullable=False),  # creating, pending, running, succeeded, ...
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("family", sa.String(64)),  # the key without --force generation: same data + settings
    sa.Column("generation", sa.Integer),
    sa.Column("wait_deadline", sa.Float),  # wall clock; a retried wait keeps it
    sa.Column("last_event_id", sa.String(200)),  # the last event written to the run log
    sa.Column("consumed_at", sa.Float),  # a run that used the result finished (see consume_job)
)

leases = sa.Table(
    "leases", metadata,
    sa.Column("kind", sa.String(20), primary_key=True),
    sa.Column("provider", sa.String(500), primary_key=True),
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)

deployments = sa.Table(
    "deployments", metadata,
    sa.Column("provider", sa.String(500), primary_key=True),
    sa.Column("model", sa.String(300), primary_key=True),
    sa.Column("deployment", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)


class Ledger:
    def __init__(self, url: str) -> None:
        self.engine = open_tables(url, metadata)

    # --- uploads ---------------------------------------------------------------------------
    def find_file(self, provider: str, sha256: str, purpose: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.scalar(sa.select(uploaded_files.c.file_id).where(
                uploaded_files.c.provider == provider, uploaded_files.c.sha256 == sha256,
                uploaded_files.c.purpose == purpose))

    def record_file(self, provider: str, sha256: str, purpose: str, file_id: str) -> None:
        with self.engine.begin() as conn:
            upsert(conn, uploaded_files, {"provider": provider, "sha256": sha256, "purpose": purpose,
                                          "file_id": file_id, "created_at": time.time()})
            conn.execute(sa.delete(multipart_uploads).where(multipart_uploads.c.provider == provider,
                                                            multipart_uploads.c.sha256 == sha256))

    def open_upload(self, provider: str, sha256: str) -> dict[str, Any] | None:
        """The open multi-part upload of this content, with the parts already accepted."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(multipart_uploads).where(
                multipart_uploads.c.provider == provider, multipart_uploads.c.sha256 == sha256,
                multipart_uploads.c.expires_at > time.time())).mappings().first()
        if row is None:
            return None
        return {"upload_id": row["upload_id"], "part_bytes": row["part_bytes"], "part_ids": json.loads(row["part_ids"]),
                "expires_at": row["expires_at"]}

    def save_upload(self, provider: str, sha256: str, *, upload_id: str, part_bytes: int, part_ids: list[str],
                    expires_at: float) -> None:
        with self.engine.begin() as conn:
            upsert(conn, multipart_uploads, {"provider": provider, "sha256": sha256, "upload_id": upload_id,
                                             "part_bytes": part_bytes, "part_ids": json.dumps(part_ids),
                                             "expires_at": expires_at})

    def drop_upload(self, provider: str, sha256: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.delete(multipart_uploads).where(multipart_uploads.c.provider == provider,
                                                            multipart_uploads.c.sha256 == sha256))

    # --- jobs ------------------------------------------------------------------------------
    def job_entry(self, provider: str, key: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(fine_tuning_jobs).where(
                fine_tuning_jobs.c.provider == provider, fine_tuning_jobs.c.idempotency_key == key)).mappings().first()
        return dict(row) if row else None

    def record_job(self, provider: str, key: str, *, status: str, **fields: Any) -> None:
        """Upsert the ledger row of a key; only the given fields change (job_id, flow_run_id, ...)."""
        values = {"provider": provider, "idempotency_key": key, "status": status, "updated_at": time.time(), **fields}
        with self.engine.begin() as conn:
            upsert(conn, fine_tuning_jobs, values)

    def job_family(self, provider: str, family: str) -> list[dict[str, Any]]:
        """Ledger rows of one dataset + settings, oldest generation first."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(fine_tuning_jobs).where(
                fine_tuning_jobs.c.provider == provider, fine_tuning_jobs.c.family == family)
                .order_by(fine_tuning_jobs.c.generation))
            return [dict(r) for r in rows.mappings()]

    def consume_job(self, job_id: str) -> None:
        """A finished run used this job's result; a later `--force` run trains a new generation."""
        with self.engine.begin() as conn:
            conn.execute(sa.update(fine_tuning_jobs).where(fine_tuning_jobs.c.job_id == job_id,
                                                           fine_tuning_jobs.c.consumed_at.is_(None))
                         .values(consumed_at=time.time()))

    def jobs_in_status(self, provider: str, status: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(fine_tuning_jobs).where(fine_tuning_jobs.c.provider == provider,
                                                                  fine_tuning_jobs.c.status == status))
            return [dict(r) for r in rows.mappings()]

    def jobs_of_flow_run(self, flow_run_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(fine_tuning_jobs).where(fine_tuning_jobs.c.flow_run_id == flow_run_id))
            return [dict(r) for r in rows.mappings()]

    # --- leases (see ftflow/exactly_once.py) -----------------------------------------------
    def try_lease(self, kind: str, provider: str, key: str, owner: str, seconds: float) -> bool:
        """Take the lease if nobody holds it or its holder's lease ran out; True if we hold it now."""
        now = time.time()
        lease = leases.c
        with self.engine.begin() as conn:
            upsert(conn, leases, {"kind": kind, "provider": provider, "key": key, "owner": owner,
                                  "expires_at": now + seconds}, update={})
            conn.execute(sa.update(leases).where(lease.kind == kind, lease.provider == provider, lease.key == key,
                                                 sa.or_(lease.owner == owner, lease.expires_at < now))
                         .values(owner=owner, expires_at=now + seconds))
            return conn.scalar(sa.select(lease.owner).where(lease.kind == kind, lease.provider == provider,
                                                            lease.key == key)) == owner

    def lease_holder(self, kind: str, provider: str, key: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(leases).where(leases.c.kind == kind, leases.c.provider == provider,
                                                       leases.c.key == key)).mappings().first()
        return dict(row) if row else None

    def break_lease(self, kind: str, provider: str, key: str, owner: str) -> None:
        """Remove a lease whose holder is known to be dead (only if that holder still has it)."""
        with self.engine.begin() as conn:
            conn.execute(sa.delete(leases).where(leases.c.kind == kind, leases.c.provider == provider,
                                                 leases.c.key == key, leases.c.owner == owner))

    release_lease = break_lease

    # --- deployments -----------------------------------------------------------------------
    def record_deployment(self, provider: str, model: str, deployment: str) -> None:
        with self.engine.begin() as conn:
            upsert(conn, deployments, {"provider": provider, "model": model, "deployment": deployment,
                                       "created_at": time.time()})

    def deployment_of(self, provider: str, model: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.scalar(sa.select(deployments.c.deployment).where(deployments.c.provider == provider,
                                                                         deployments.c.model == model))

    def newest_deployment(self, model: str) -> str | None:
        """The name of the newest deployment of `model`, whichever provider identity made it."""
        with self.engine.connect() as conn:
            return conn.scalar(sa.select(deployments.c.deployment).where(deployments.c.model == model)
                               .order_by(deployments.c.created_at.desc()).limit(1))

    def list_deployments(self, provider: str | None = None) -> list[dict[str, Any]]:
        """The deployments ftflow made (of one provider identity, or all), oldest first."""
        query = sa.select(deployments).order_by(deployments.c.created_at)
        if provider is not None:
            query = query.where(deployments.c.provider == provider)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def forget_deployment(self, provider: str, model: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.delete(deployments).where(deployments.c.provider == provider,
                                                      deployments.c.model == model))
