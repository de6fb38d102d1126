"""Registry: the ledger of uploads and jobs (exactly-once) and the lineage of every run.

SQLAlchemy Core; SQLite by default (`registry_url`), PostgreSQL by URL. Every write is a
real upsert (`INSERT ... ON CONFLICT DO UPDATE`), never delete-then-insert. Tables:
- `uploaded_files`: (provider, sha256, purpose) -> file id, so equal content is uploaded once;
- `multipart_uploads`: (provider, sha256) -> an open Uploads session and the parts it accepted;
- `fine_tuning_jobs`: (provider, idempotency key) -> job id, its state in ftflow's lifecycle,
  the polling deadline and the last event logged (kept across task retries and re-runs);
- `leases`: (kind, provider, key) -> who may create that object now (see ftflow/exactly_once.py);
- `flow_runs`: the flow runs of this machine with their process, to mark dead ones Crashed;
- `deployments`: (provider, model) -> the name a model answers under (Azure deployments);
- `runs`: one row per retrain run, its figures and decisions as JSON;
- `promotions`: each promotion with its backend; the newest per base model is what apps read.
"""

from __future__ import annotations

import json
import time
from functools import cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

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

flow_runs = sa.Table(
    "flow_runs", metadata,
    sa.Column("flow_run_id", sa.String(64), primary_key=True),
    sa.Column("host", sa.String(200), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("process_started", sa.String(40), nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float),
)

deployments = sa.Table(
    "deployments", metadata,
    sa.Column("provider", sa.String(500), primary_key=True),
    sa.Column("model", sa.String(300), primary_key=True),
    sa.Column("deployment", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

runs = sa.Table(
    "runs", metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("flow_run_id", sa.String(64)),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("status", sa.String(40), nullable=False),
    sa.Column("dataset_sha256", sa.String(64)),
    sa.Column("base_model", sa.String(200)),
    sa.Column("fine_tuned_model", sa.String(300)),
    sa.Column("job_id", sa.String(200)),
    sa.Column("promoted", sa.Boolean, nullable=False, default=False),
    sa.Column("record", sa.Text, nullable=False),
    sa.Column("backend", sa.String(40)),
)

promotions = sa.Table(
    "promotions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("base_model", sa.String(200), nullable=False),
    sa.Column("model", sa.String(300), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("promoted_at", sa.Float, nullable=False),
    sa.Column("backend", sa.String(40)),
    sa.Column("deployment", sa.String(200)),
)


def _add_missing_columns(engine: sa.Engine) -> None:
    """Registries written by older ftflow versions get the new (nullable) columns."""
    inspector = sa.inspect(engine)
    with engine.begin() as conn:
        for table in metadata.sorted_tables:
            present = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name not in present:
                    kind = column.type.compile(dialect=engine.dialect)
                    conn.execute(sa.text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))


@cache
def engine_for(url: str) -> sa.Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # Concurrent runs (threads and processes) write the same file: wait for the lock, do not fail.
        engine = sa.create_engine(url, connect_args={"timeout": 60})
    else:
        engine = sa.create_engine(url, pool_pre_ping=True)
    for attempt in range(5):
        try:
            metadata.create_all(engine)
            _add_missing_columns(engine)
            break
        except sa.exc.DBAPIError:  # another process created the same table a moment ago: look again
            if attempt == 4:
                raise
            time.sleep(0.1 * (attempt + 1))
    return engine


def upsert(conn: sa.Connection, table: sa.Table, values: dict[str, Any], *, update: dict[str, Any] | None = None,
           ) -> None:
    """INSERT ... ON CONFLICT (primary key) DO UPDATE SET `update` (default: every non-key value)."""
    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table).values(**values)
    keys = [c.name for c in table.primary_key.columns]
    changes = update if update is not None else {k: v for k, v in values.items() if k not in keys}
    conn.execute(insert.on_conflict_do_update(index_elements=keys, set_=changes) if changes
                 else insert.on_conflict_do_nothing(index_elements=keys))


class Registry:
    def __init__(self, url: str) -> None:
        self.engine = engine_for(url)

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

    # --- flow runs of this machine (crash hygiene) -----------------------------------------
    def register_flow_run(self, flow_run_id: str, *, host: str, pid: int, process_started: str) -> None:
        with self.engine.begin() as conn:
            upsert(conn, flow_runs, {"flow_run_id": flow_run_id, "host": host, "pid": pid,
                                     "process_started": process_started, "started_at": time.time()},
                   update={"host": host, "pid": pid, "process_started": process_started})

    def open_flow_runs(self, host: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(flow_runs).where(flow_runs.c.host == host, flow_runs.c.finished_at.is_(None)))
            return [dict(r) for r in rows.mappings()]

    def close_flow_run(self, flow_run_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.update(flow_runs).where(flow_runs.c.flow_run_id == flow_run_id)
                         .values(finished_at=time.time()))

    # --- deployments -----------------------------------------------------------------------
    def record_deployment(self, provider: str, model: str, deployment: str) -> None:
        with self.engine.begin() as conn:
            upsert(conn, deployments, {"provider": provider, "model": model, "deployment": deployment,
                                       "created_at": time.time()})

    def deployment_of(self, provider: str, model: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.scalar(sa.select(deployments.c.deployment).where(deployments.c.provider == provider,
                                                                         deployments.c.model == model))

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

    def promoted_models(self, backend: str | None = None) -> list[dict[str, Any]]:
        """Each promoted model once, with its base model, newest promotion first."""
        query = sa.select(promotions).order_by(promotions.c.promoted_at.desc(), promotions.c.id.desc())
        if backend is not None:
            query = query.where(promotions.c.backend == backend)
        seen: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(query).mappings():
                seen.setdefault(row["model"], dict(row))
        return list(seen.values())

    def recorded_models(self) -> set[str]:
        """Fine-tuned models of runs that have ended (their record is written)."""
        with self.engine.connect() as conn:
            return {m for (m,) in conn.execute(sa.select(runs.c.fine_tuned_model).where(
                runs.c.fine_tuned_model.is_not(None)))}

    def backend_of(self, model: str) -> str | None:
        """Where a fine-tuned model lives: the backend its promotion or its run recorded."""
        with self.engine.connect() as conn:
            return conn.scalar(sa.select(promotions.c.backend).where(promotions.c.model == model,
                                                                     promotions.c.backend.is_not(None))
                               .order_by(promotions.c.promoted_at.desc()).limit(1)) or \
                conn.scalar(sa.select(runs.c.backend).where(runs.c.fine_tuned_model == model,
                                                            runs.c.backend.is_not(None))
                            .order_by(runs.c.started_at.desc()).limit(1))

    # --- runs ------------------------------------------------------------------------------
    def save_run(self, record: dict[str, Any]) -> None:
        values = {
            "run_id": record["run_id"], "flow_run_id": record.get("flow_run_id"),
            "started_at": record["started_at"], "status": record["status"],
            "dataset_sha256": record.get("dataset_sha256"), "base_model": record.get("base_model"),
            "fine_tuned_model": record.get("fine_tuned_model"), "job_id": record.get("job_id"),
            "promoted": bool(record.get("promoted")), "record": json.dumps(record, default=str),
            "backend": record.get("backend"),
        }
        with self.engine.begin() as conn:
            upsert(conn, runs, values)
        if record.get("job_id"):  # a run record names this job: no later run attaches to it again
            self.consume_job(record["job_id"])

    def list_runs(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(runs.c.record).order_by(runs.c.started_at.desc()).limit(limit))
            return [json.loads(r[0]) for r in rows]

    def find_runs(self, prefix: str, limit: int = 10) -> list[dict[str, Any]]:
        """Runs whose id, name or Prefect flow-run id equals `prefix`, else those starting with it; newest first."""
        exact = sa.or_(runs.c.run_id == prefix, runs.c.flow_run_id == prefix,
                       runs.c.record.contains(f'"run_name": "{prefix}"', autoescape=True))
        starts = sa.or_(runs.c.run_id.startswith(prefix, autoescape=True),
                        runs.c.flow_run_id.startswith(prefix, autoescape=True),
                        runs.c.record.contains(f'"run_name": "{prefix}', autoescape=True))
        with self.engine.connect() as conn:
            for condition in (exact, starts):
                rows = conn.execute(sa.select(runs.c.record).where(condition)
                                    .order_by(runs.c.started_at.desc()).limit(limit)).all()
                if rows:
                    return [json.loads(r[0]) for r in rows]
        return []

    def last_successful_run(self, base_model: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.scalar(sa.select(runs.c.record).where(runs.c.status == "succeeded",
                                                             runs.c.base_model == base_model)
                              .order_by(runs.c.started_at.desc()).limit(1))
        return json.loads(row) if row else None

    # --- promotions ------------------------------------------------------------------------
    def promote(self, base_model: str, model: str, run_id: str, *, backend: str | None = None,
                deployment: str | None = None) -> None:
        with self.engine.begin() as conn:
            deployment = deployment or conn.scalar(sa.select(deployments.c.deployment).where(
                deployments.c.model == model).order_by(deployments.c.created_at.desc()).limit(1))
            conn.execute(sa.insert(promotions).values(base_model=base_model, model=model, run_id=run_id,
                                                      promoted_at=time.time(), backend=backend,
                                                      deployment=deployment))

    def current_promotion(self, base_model: str | None = None) -> dict[str, Any] | None:
        query = sa.select(promotions).order_by(promotions.c.promoted_at.desc(), promotions.c.id.desc()).limit(1)
        if base_model:
            query = query.where(promotions.c.base_model == base_model)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return dict(row) if row else None
