"""A Prefect server backed by PostgreSQL, as the README recommends for production.

A database of its own (unique name, dropped after), the server on a free port, one flow run
through its API.
"""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tests.conftest import postgres_engine_or_skip, postgres_url
from tests.integration.ui.stack import ROOT, PrefectStack

pytestmark = [pytest.mark.postgres]

FLOW = """
from prefect import flow

@flow(name="postgres-check")
def check() -> int:
    return 42

check()
"""


def test_a_prefect_server_on_postgresql_records_a_flow_run(tmp_path):
    admin = postgres_engine_or_skip().execution_options(isolation_level="AUTOCOMMIT")
    database = f"ftflow_prefect_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{database}"'))
    url = make_url(postgres_url()).set(drivername="postgresql+asyncpg", database=database)
    try:
        with PrefectStack(tmp_path, database_url=url.render_as_string(hide_password=False)) as stack:
            done = subprocess.run([sys.executable, "-c", FLOW], cwd=ROOT, env=stack.env, capture_output=True,
                                  text=True, timeout=300)
            assert done.returncode == 0, done.stderr[-2000:]
            with stack.client() as client:
                runs = client.read_flow_runs()
            assert [(r.state.type.value, r.flow_id is not None) for r in runs] == [("COMPLETED", True)]
        probe = sa.create_engine(make_url(postgres_url()).set(database=database))  # the run is in PostgreSQL
        with probe.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM flow_run")).scalar() == 1
        probe.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
