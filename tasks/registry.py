"""Registry: the ledger of uploads and jobs (exactly-once) and the lineage of every run.

SQLAlchemy Core; SQLite by default (`registry_url`), PostgreSQL by URL. Four tables:
- `uploaded_files`: (provider, sha256, purpose) -> file id, so equal content is uploaded once;
- `fine_tuning_jobs`: (provider, idempotency key) -> job id, written before and after create;
- `runs`: one row per retrain run, its figures and decisions as JSON;
- `promotions`: each promotion; the newest per base model is what downstream apps read.
"""

from __future__ import annotations

import json
import time
from functools import cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
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

fine_tuning_jobs = sa.Table(
    "fine_tuning_jobs", metadata,
    sa.Column("provider", sa.String(500), primary_key=True),
    sa.Column("idempotency_key", sa.String(64), primary_key=True),
    sa.Column("job_id", sa.String(200)),  # NULL while the create call is in flight
    sa.Column("flow_run_id", sa.String(64)),
    sa.Column("status", sa.String(40), nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
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
)

promotions = sa.Table(
    "promotions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("base_model", sa.String(200), nullable=False),
    sa.Column("model", sa.String(300), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("promoted_at", sa.Float, nullable=False),
)


@cache
def engine_for(url: str) -> sa.Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url)
    metadata.create_all(engine)
    return engine


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
            conn.execute(sa.delete(uploaded_files).where(
                uploaded_files.c.provider == provider, uploaded_files.c.sha256 == sha256,
                uploaded_files.c.purpose == purpose))
            conn.execute(sa.insert(uploaded_files).values(provider=provider, sha256=sha256, purpose=purpose,
                                                          file_id=file_id, created_at=time.time()))

    # --- jobs ------------------------------------------------------------------------------
    def job_entry(self, provider: str, key: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(fine_tuning_jobs).where(
                fine_tuning_jobs.c.provider == provider, fine_tuning_jobs.c.idempotency_key == key)).mappings().first()
        return dict(row) if row else None

    def record_job(self, provider: str, key: str, *, job_id: str | None, status: str,
                   flow_run_id: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.delete(fine_tuning_jobs).where(
                fine_tuning_jobs.c.provider == provider, fine_tuning_jobs.c.idempotency_key == key))
            conn.execute(sa.insert(fine_tuning_jobs).values(provider=provider, idempotency_key=key, job_id=job_id,
                                                            status=status, flow_run_id=flow_run_id,
                                                            updated_at=time.time()))

    def jobs_of_flow_run(self, flow_run_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(fine_tuning_jobs).where(fine_tuning_jobs.c.flow_run_id == flow_run_id))
            return [dict(r) for r in rows.mappings()]

    # --- runs ------------------------------------------------------------------------------
    def save_run(self, record: dict[str, Any]) -> None:
        values = {
            "run_id": record["run_id"], "flow_run_id": record.get("flow_run_id"),
            "started_at": record["started_at"], "status": record["status"],
            "dataset_sha256": record.get("dataset_sha256"), "base_model": record.get("base_model"),
            "fine_tuned_model": record.get("fine_tuned_model"), "job_id": record.get("job_id"),
            "promoted": bool(record.get("promoted")), "record": json.dumps(record, default=str),
        }
        with self.engine.begin() as conn:
            conn.execute(sa.delete(runs).where(runs.c.run_id == record["run_id"]))
            conn.execute(sa.insert(runs).values(**values))

    def list_runs(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(runs.c.record).order_by(runs.c.started_at.desc()).limit(limit))
            return [json.loads(r[0]) for r in rows]

    def find_runs(self, prefix: str, limit: int = 10) -> list[dict[str, Any]]:
        """Runs whose id or name equals `prefix`, else those starting with it; newest first."""
        exact = sa.or_(runs.c.run_id == prefix, runs.c.record.contains(f'"run_name": "{prefix}"', autoescape=True))
        starts = sa.or_(runs.c.run_id.startswith(prefix, autoescape=True),
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
    def promote(self, base_model: str, model: str, run_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.insert(promotions).values(base_model=base_model, model=model, run_id=run_id,
                                                      promoted_at=time.time()))

    def current_promotion(self, base_model: str | None = None) -> dict[str, Any] | None:
        query = sa.select(promotions).order_by(promotions.c.promoted_at.desc(), promotions.c.id.desc()).limit(1)
        if base_model:
            query = query.where(promotions.c.base_model == base_model)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return dict(row) if row else None
