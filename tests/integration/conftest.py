"""Fixtures of the integration tests: a Prefect server, the local service, the OpenAPI spec, a registry."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import DATA, FAST, ROOT, postgres_engine_or_skip, postgres_url


@pytest.fixture(scope="session")
def prefect_server():
    """A temporary Prefect server with its own database (on PostgreSQL), for tests that run whole flows."""
    from tests.integration.prefect_harness import prefect_test_server

    with prefect_test_server(startup_timeout=300):  # a loaded CI machine can take minutes
        # GX imported once in this test process: the commands a test runs here (CliRunner) against this
        # server then run the quality suites here, not each in a process of its own that imports GX
        # again (seconds of CPU per command; ftflow.suites_process.start_suites_for). That process is
        # tested in test_suites_process.py and runs in every command the tests start as a process.
        import great_expectations  # noqa: F401

        yield


@pytest.fixture(scope="session")
def fork_server(prefect_server, tmp_path_factory):
    """A fork server (tests/forkserver.py) of this test process's environment, pointed at its Prefect
    server: the `python` processes a test starts only to run a command fork from it, imports done."""
    from prefect.settings import get_current_settings

    from tests.forkserver import ForkServer

    server = ForkServer({**os.environ, "PREFECT_API_URL": str(get_current_settings().api.url)}, ROOT,
                        tmp_path_factory.mktemp("forkserver"))
    yield server
    server.close()


# The parts of OpenAI's OpenAPI spec the service implements, vendored (tests/data/openai-openapi.SOURCE.md).
SPEC_PATH = DATA / "openai-openapi.yaml"


def required_file(path: Path) -> Path:
    """A file the tests need: a missing one fails the test (a skip would hide it), naming the file."""
    if not path.is_file():
        pytest.fail(f"{path} is missing: it is part of the repository (tests/data/), restore it", pytrace=False)
    return path


def _as_openapi_31(node):
    """The spec's few OpenAPI 3.0 leftovers in 3.1 form: `exclusiveMinimum: true` next to
    `minimum: 0` means "> 0" (read as a 3.1 number it would mean "> 1")."""
    if isinstance(node, dict):
        for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
            if node.get(exclusive) is True and bound in node:
                node[exclusive] = node.pop(bound)
        for value in node.values():
            _as_openapi_31(value)
    elif isinstance(node, list):
        for value in node:
            _as_openapi_31(value)
    return node


@pytest.fixture(scope="session")
def spec():
    """OpenAI's OpenAPI spec (the vendored subset), readable by a JSON Schema 2020-12 validator."""
    import yaml

    with open(required_file(SPEC_PATH)) as f:
        loaded = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    # Known gap in the spec itself: its /pause example returns status "paused", which the
    # FineTuningJob enum omits. We return what the API returns and widen only that enum.
    loaded["components"]["schemas"]["FineTuningJob"]["properties"]["status"]["enum"].append("paused")
    return _as_openapi_31(loaded)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def registry_url(request, tmp_path):
    """A fresh registry database on SQLite, and on the test PostgreSQL in a schema of its own (dropped after)."""
    import uuid

    import sqlalchemy as sa

    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'r.sqlite3'}"
        return
    admin = postgres_engine_or_skip()
    schema = f"ftflow_{uuid.uuid4().hex[:8]}"
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{postgres_url()}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))


@pytest.fixture
def ledger(registry_url):
    """The ledger (files, jobs, leases, deployments) in a fresh registry database."""
    from ftflow.store.ledger import Ledger

    return Ledger(registry_url)


@pytest.fixture
def lineage(registry_url):
    """The lineage store (runs, promotions, flow runs) in the same fresh registry database."""
    from ftflow.store.lineage import LineageStore

    return LineageStore(registry_url)


@pytest.fixture
def local_service(tmp_path):
    """A fresh local service in a thread, on its own data dir and a free loopback port."""
    from localai.server import LocalService

    with LocalService(data_dir=tmp_path / "service", **FAST) as service:
        yield service


@pytest.fixture
def client(local_service):
    import openai

    return openai.OpenAI(base_url=local_service.base_url, api_key=local_service.api_key, max_retries=0)
