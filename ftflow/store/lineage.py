"""The lineage store: what each run did, which model is promoted, and which flow runs this machine runs.

Tables (the same names and columns as ever, so existing databases keep working):
- `runs`: one row per retrain run, its figures and decisions as JSON (`record`);
- `promotions`: each promotion with its backend and deployment; the newest per base model is
  what apps call (`ftflow models current`);
- `flow_runs`: the flow runs of this machine with their process, so a later run can mark the
  dead ones Crashed (tasks/reconcile.py).
"""

from __future__ import annotations

import json
import time
from typing import Any

import sqlalchemy as sa

from ftflow.store.database import open_tables, upsert

metadata = sa.MetaData()

flow_runs = sa.Table(
    "flow_runs", metadata,
    sa.Column("flow_run_id", sa.String(64), primary_key=True),
    sa.Column("host", sa.String(200), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("process_started", sa.String(40), nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float),
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


class LineageStore:
    def __init__(self, url: str) -> None:
        self.engine = open_tables(url, metadata)

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

    # --- promotions ------------------------------------------------------------------------
    def promote(self, base_model: str, model: str, run_id: str, *, backend: str | None = None,
                deployment: str | None = None) -> None:
        """Record a promotion; `deployment`: the name the model answers under, if it has one (the ledger's)."""
        with self.engine.begin() as conn:
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
