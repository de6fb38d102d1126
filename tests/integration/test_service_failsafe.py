"""The service fails safe: bad requests get OpenAI's 400 with `param`, a broken job fails alone,
an unexpected error is a 500 in the envelope logged once, and nothing is open without the key.

Every create-job body below is also judged by the spec's own `CreateFineTuningJobRequest`
schema: the service refuses exactly what the schema refuses.
"""

from __future__ import annotations

import logging

import httpx
import pytest
from openapi_schema_validator import OAS31Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from localai.config import ServiceConfig
from localai.server import LocalService, announcement
from tests.conftest import FAST, preference_bytes, training_bytes, wait_for_job

pytestmark = pytest.mark.service

# (fields merged into a valid body, the `param` OpenAI's error must name)
INVALID = [
    ({"hyperparameters": {"n_epochs": -1}}, "hyperparameters.n_epochs"),
    ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs"),
    ({"hyperparameters": {"n_epochs": 1e9}}, "hyperparameters.n_epochs"),
    ({"hyperparameters": {"n_epochs": 2.5}}, "hyperparameters.n_epochs"),
    ({"hyperparameters": {"n_epochs": 51}}, "hyperparameters.n_epochs"),
    ({"hyperparameters": {"n_epochs": "abc"}}, "hyperparameters.n_epochs"),
    ({"hyperparameters": {"n_epochs": True}}, "hyperparameters.n_epochs"),
    ({"hyperparameters": {"batch_size": 0}}, "hyperparameters.batch_size"),
    ({"hyperparameters": {"batch_size": -8}}, "hyperparameters.batch_size"),
    ({"hyperparameters": {"batch_size": 257}}, "hyperparameters.batch_size"),
    ({"hyperparameters": {"learning_rate_multiplier": -0.5}}, "hyperparameters.learning_rate_multiplier"),
    ({"hyperparameters": {"learning_rate_multiplier": 0}}, "hyperparameters.learning_rate_multiplier"),
    ({"hyperparameters": {"learning_rate_multiplier": "fast"}}, "hyperparameters.learning_rate_multiplier"),
    ({"hyperparameters": "auto"}, "hyperparameters"),
    ({"method": {"type": "supervised", "supervised": "fast"}}, "method.supervised"),
    ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": -1}}}},
     "method.supervised.hyperparameters.n_epochs"),
    ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"batch_size": "1"}}}},
     "method.supervised.hyperparameters.batch_size"),
    ({"model": "gpt-4.1-mini", "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0}}}},
     "method.dpo.hyperparameters.beta"),
    ({"model": "gpt-4.1-mini", "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 2.5}}}},
     "method.dpo.hyperparameters.beta"),
    ({"model": "gpt-4.1-mini", "method": {"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 0}}}},
     "method.dpo.hyperparameters.n_epochs"),
    ({"method": {"type": "magic"}}, "method.type"),
    ({"method": "dpo"}, "method"),
    ({"seed": -1}, "seed"),
    ({"seed": "5"}, "seed"),
    ({"seed": 2**31}, "seed"),
    ({"suffix": ""}, "suffix"),
    ({"suffix": "x" * 65}, "suffix"),
    ({"suffix": 7}, "suffix"),
    ({"model": 4}, "model"),
    ({"training_file": None}, "training_file"),
    ({"validation_file": 12}, "validation_file"),
    ({"metadata": {"k": 1}}, "metadata.k"),
]
VALID = [
    {},
    {"hyperparameters": {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"}},
    {"hyperparameters": {"n_epochs": 50, "batch_size": 256, "learning_rate_multiplier": 0.01}},
    {"hyperparameters": {"n_epochs": 1, "batch_size": 1}},
    {"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2.0}}}},
    {"method": {"type": "supervised"}},
    {"model": "gpt-4.1-mini", "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 2, "n_epochs": 1}}}},
    {"model": "gpt-4.1-mini", "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": "auto"}}}},
    {"seed": 0, "suffix": "x" * 64, "metadata": {"k": "v"}},
]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    with LocalService(data_dir=tmp_path_factory.mktemp("failsafe"), **FAST) as running:
        yield running


@pytest.fixture(scope="module")
def http(service):
    with httpx.Client(base_url=service.base_url, headers={"Authorization": f"Bearer {service.api_key}"}) as client:
        yield client


@pytest.fixture(scope="module")
def files(http):
    def upload(name, content):
        response = http.post("files", files={"file": (name, content)}, data={"purpose": "fine-tune"})
        return response.json()["id"]

    return {"chat": upload("t.jsonl", training_bytes()), "preference": upload("p.jsonl", preference_bytes())}


@pytest.fixture(scope="module")
def request_schema(spec):
    registry = Registry().with_resource("urn:openai", Resource.from_contents(spec, default_specification=DRAFT202012))
    ref = {"$ref": "urn:openai#/components/schemas/CreateFineTuningJobRequest"}
    return OAS31Validator(ref, registry=registry)


def body_with(files, fields):
    dpo = isinstance(fields.get("method"), dict) and fields["method"].get("type") == "dpo"
    return {"model": "gpt-4o-mini", "training_file": files["preference" if dpo else "chat"], **fields}


@pytest.mark.parametrize(("fields", "param"), INVALID, ids=[p + ":" + repr(f)[:40] for f, p in INVALID])
def test_every_invalid_field_is_a_400_naming_it(http, files, request_schema, fields, param):
    body = body_with(files, fields)
    assert not request_schema.is_valid(body), "the spec's schema accepts this body; the case is wrong"
    response = http.post("fine_tuning/jobs", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param, error
    assert param.rsplit(".", 1)[-1] in error["message"]


@pytest.mark.parametrize("fields", VALID, ids=[repr(f)[:50] for f in VALID])
def test_what_the_spec_allows_is_accepted(http, files, request_schema, fields):
    body = body_with(files, fields)
    request_schema.validate(body)
    response = http.post("fine_tuning/jobs", json=body)
    assert response.status_code == 200, response.text
    job = response.json()
    method = job["method"]
    given = (fields.get("method") or {}).get(method["type"], {}).get("hyperparameters") or fields.get("hyperparameters")
    for name, value in (given or {}).items():
        assert method[method["type"]]["hyperparameters"][name] == value
    http.post(f"fine_tuning/jobs/{job['id']}/cancel")


def test_an_unknown_hyperparameter_is_refused_not_ignored(http, files):
    response = http.post("fine_tuning/jobs", json=body_with(files, {"hyperparameters": {"epochs": 3}}))
    assert response.status_code == 400 and response.json()["error"]["param"] == "hyperparameters.epochs"


def test_a_broken_job_fails_alone_and_later_jobs_run(local_service, client, caplog):
    """A job the simulator cannot advance (here: a record with n_epochs "abc", as an older
    version could store) fails with an error; a job created after it still succeeds."""
    file = client.files.create(file=("t.jsonl", training_bytes()), purpose="fine-tune")
    store, jobs = local_service.service.openai.store, local_service.service.openai.jobs
    with store.transaction():  # the scheduler waits until the record is corrupted
        broken = jobs.create_job({"model": "gpt-4o-mini", "training_file": file.id})
        record = store.get("job", broken["id"])
        record["hyperparameters"]["n_epochs"] = "abc"
        store.put("job", record)
    good = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file.id)
    with caplog.at_level(logging.ERROR, logger="localai"):
        assert wait_for_job(client, good.id).status == "succeeded"
        failed = wait_for_job(client, broken["id"])
    assert failed.status == "failed" and failed.error.code == "server_error"
    tracebacks = [r for r in caplog.records if r.exc_info and broken["id"] in r.getMessage()]
    assert len(tracebacks) == 1, [r.getMessage() for r in caplog.records]


def test_an_unhandled_error_is_a_500_in_the_envelope_logged_once(local_service, spec, caplog, monkeypatch):
    def broken_listing():
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(local_service.service.openai.models, "list_models", broken_listing)
    with caplog.at_level(logging.ERROR):
        response = httpx.get(f"{local_service.base_url}/models",
                             headers={"Authorization": f"Bearer {local_service.api_key}"})
    assert response.status_code == 500
    registry = Registry().with_resource("urn:openai", Resource.from_contents(spec, default_specification=DRAFT202012))
    OAS31Validator({"$ref": "urn:openai#/components/schemas/ErrorResponse"}, registry=registry).validate(response.json())
    assert response.json()["error"]["type"] == "server_error"
    logged = [r for r in caplog.records if r.exc_info and "simulated bug" in str(r.exc_info[1])]
    assert len(logged) == 1, [(r.name, r.getMessage()) for r in caplog.records]


def test_openapi_is_off_by_default_and_needs_the_key_when_on(local_service, tmp_path):
    key = {"Authorization": f"Bearer {local_service.api_key}"}
    root = local_service.base_url.removesuffix("/v1")
    assert httpx.get(f"{root}/openapi.json").status_code == 401
    assert httpx.get(f"{root}/openapi.json", headers=key).status_code == 404
    assert httpx.get(f"{root}/docs").status_code == 404
    with LocalService(data_dir=tmp_path / "on", openapi=True, **FAST) as on:
        key = {"Authorization": f"Bearer {on.api_key}"}
        root = on.base_url.removesuffix("/v1")
        assert httpx.get(f"{root}/openapi.json").status_code == 401
        assert httpx.get(f"{root}/openapi.json", headers=key).json()["paths"]


def test_the_key_is_printed_only_when_the_service_generated_it():
    config = ServiceConfig(api_key="sk-local-abcdef123456")
    generated = "\n".join(announcement(config, host="127.0.0.1", port=1, generated=True))
    given = "\n".join(announcement(config, host="127.0.0.1", port=1, generated=False))
    assert "OPENAI_API_KEY=sk-local-abcdef123456" in generated
    assert "abcdef" not in given and "FTFLOW_SERVICE_API_KEY" in given


def test_the_embedded_service_leaves_the_host_processs_logging_alone(tmp_path):
    """Started inside a flow run, it must not shut down Prefect's log handlers (uvicorn's dictConfig did)."""

    class Recording(logging.Handler):
        closed = flushed = False

        def emit(self, record: logging.LogRecord) -> None:
            pass

        def flush(self) -> None:
            self.flushed = True

        def close(self) -> None:
            self.closed = True
            super().close()

    host = Recording()
    logging.getLogger().addHandler(host)
    try:
        with LocalService(data_dir=tmp_path / "embedded", **FAST):
            pass
        assert not host.flushed and not host.closed
        assert host in logging.getLogger().handlers
    finally:
        logging.getLogger().removeHandler(host)
