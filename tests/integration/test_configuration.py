"""One configuration path: what the operator configures (ftflow.toml, FTFLOW_*) is what every run
uses, whether a deployment, a direct call or the CLI starts it; only what a person gave overrides it.

The first two tests are the issue's reproductions: the flows called with exactly prefect.yaml's
parameters, as a Prefect worker calls them.
"""

from __future__ import annotations

import json
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from flows.finetune import finetune
from flows.prepare import prepare
from flows.retrain import retrain
from flows.snapshot_eval import snapshot_eval
from ftflow.cli import app
from ftflow.errors import ConfigError
from ftflow.settings import Settings, get_settings
from tests.conftest import ROOT

NANO = "gpt-4.1-nano-2025-04-14"
PROMPT = "Du bist der Alpenrad-Support (aus der Umgebung)."


def deployment_parameters(name: str) -> dict[str, Any]:
    """A deployment's parameters exactly as prefect.yaml gives them to the worker."""
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text("utf-8"))
    return next(d for d in spec["deployments"] if d["name"] == name).get("parameters") or {}


def toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)  # strings, numbers and booleans are written alike


@pytest.fixture
def toml(tmp_path, monkeypatch):
    """Write the operator's ftflow.toml (FTFLOW_CONFIG) and run from the project folder, as a worker does."""
    path = tmp_path / "ftflow.toml"
    monkeypatch.setenv("FTFLOW_CONFIG", str(path))
    monkeypatch.chdir(ROOT)

    def write(**values: Any) -> Path:
        path.write_text("".join(f"{key} = {toml_value(value)}\n" for key, value in values.items()), "utf-8")
        return path

    return write


@pytest.mark.flow
@pytest.mark.service
def test_the_retrain_deployment_trains_the_model_of_ftflow_toml(prefect_server, local_service, toml, tmp_path,
                                                                monkeypatch):
    monkeypatch.setenv("FTFLOW_SERVICE_URL", local_service.base_url)
    monkeypatch.setenv("FTFLOW_SERVICE_API_KEY", local_service.api_key)
    monkeypatch.setenv("FTFLOW_POLL_INITIAL_SECONDS", "0.05")
    monkeypatch.setenv("FTFLOW_POLL_MAX_SECONDS", "0.2")
    config = toml(model=NANO, suffix="operator", runs_dir=str(tmp_path / "runs"), work_dir=str(tmp_path / "work"),
                  registry_url=f"sqlite:///{tmp_path / 'registry.sqlite3'}")

    record = retrain(**deployment_parameters("retrain"))

    assert record["status"] == "succeeded", record.get("reason")
    assert record["base_model"] == NANO and record["fine_tuned_model"].startswith(f"ft:{NANO}:")
    assert ":operator:" in record["fine_tuned_model"]  # the suffix of ftflow.toml, not a flow default
    recorded = json.loads(Path(record["run_dir"], "run.json").read_text("utf-8"))["settings"]
    assert recorded["model"] == {"value": NANO, "origin": str(config.resolve())}
    assert recorded["system_prompt"]["origin"] == "override"  # the deployment's deliberate choice
    assert recorded["FTFLOW_SERVICE_API_KEY"] == {"value": "present", "origin": "FTFLOW_SERVICE_API_KEY"}
    assert local_service.api_key not in Path(record["run_dir"], "run.json").read_text("utf-8")


@pytest.mark.flow
def test_the_prepare_deployment_honours_the_environment(prefect_server, toml, tmp_path, monkeypatch):
    toml(work_dir=str(tmp_path / "work"))
    monkeypatch.setenv("FTFLOW_OUT_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("FTFLOW_SYSTEM_PROMPT", PROMPT)
    monkeypatch.setenv("FTFLOW_PII", "off")

    report = prepare(**deployment_parameters("prepare"))

    out = Path(report["files"]["report.json"]).parent
    text = (out / "train.jsonl").read_text("utf-8")
    train = [json.loads(line) for line in text.splitlines()]
    assert train and all(example["messages"][0] == {"role": "system", "content": PROMPT} for example in train)
    assert report["pii"] == {} and "[EMAIL]" not in text and "[PHONE]" not in text and "@" in text
    assert out.resolve() == (tmp_path / "out").resolve()  # FTFLOW_OUT_DIR


@pytest.mark.flow
def test_the_cli_passes_only_the_options_typed(prefect_server, toml, tmp_path, monkeypatch):
    """`ftflow prepare` with no --model takes ftflow.toml's; a typed option beats FTFLOW_*."""
    toml(model="gpt-4.1-mini-2025-04-14", work_dir=str(tmp_path / "work"))
    monkeypatch.setenv("FTFLOW_SYSTEM_PROMPT", PROMPT)
    monkeypatch.setenv("FTFLOW_PII", "off")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["prepare", str(ROOT / "data/raw/*"), "--out", str(out), "--pii", "mask"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text("utf-8"))
    assert report["model"] == "gpt-4.1-mini-2025-04-14" and report["pii"]  # --pii mask beat FTFLOW_PII=off
    first = json.loads((out / "train.jsonl").read_text("utf-8").splitlines()[0])
    assert first["messages"][0] == {"role": "system", "content": PROMPT}


def test_the_cli_hands_its_one_resolution_to_the_flow(toml, monkeypatch):
    """retrain from the CLI: typed options are overrides named by their option, the rest from toml/env."""
    import flows.retrain

    toml(model=NANO, n_epochs=2)
    monkeypatch.setenv("FTFLOW_N_EPOCHS", "4")
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # no temporary server: the flow is faked
    seen: dict[str, Any] = {}

    def fake_retrain(**parameters: Any) -> None:
        seen.update(parameters)
        raise ConfigError("stop here")

    monkeypatch.setattr(flows.retrain, "retrain", fake_retrain)
    result = CliRunner().invoke(app, ["retrain", "--max-cost-usd", "7"])
    assert result.exit_code == 2 and "stop here" in result.stderr
    settings: Settings = seen["settings"]
    assert set(seen) == {"sources", "force", "settings"}  # nothing else: no defaults of the command
    assert (settings.model, settings.n_epochs, settings.max_cost_usd) == (NANO, 4, 7.0)
    origins = settings.origins()
    assert origins["model"].endswith("ftflow.toml") and origins["n_epochs"] == "FTFLOW_N_EPOCHS"
    assert origins["max_cost_usd"] == "--max-cost-usd" and origins["suffix"] == "default"


# --- every key of ftflow.example.toml through every flow's resolution -------------------------------

EXAMPLE = ROOT / "ftflow.example.toml"


def documented_keys() -> set[str]:
    """The keys of ftflow.example.toml: set, or commented out as `# key = value`."""
    text = EXAMPLE.read_text("utf-8")
    commented = {line.lstrip("# ").split(" =")[0] for line in text.splitlines()
                 if line.startswith("# ") and " = " in line and line.lstrip("# ").split(" =")[0].isidentifier()}
    return set(tomllib.loads(text)) | commented


def test_the_example_documents_every_setting_at_its_default():
    example = tomllib.loads(EXAMPLE.read_text("utf-8"))
    assert documented_keys() - {"key"} >= set(Settings.model_fields), "a setting missing from the example"
    assert set(example) <= set(Settings.model_fields), "the example sets a key that is not a setting"
    defaults = Settings.model_construct()
    for key, value in example.items():  # what the example shows set is the default
        assert Settings(**{key: value}).model_dump()[key] == defaults.model_dump()[key], key


def three_values(name: str, tmp_path: Path) -> list[Any]:
    """Three valid values of a setting, each next one different, none of them its default where
    the type allows: for the toml, the environment and the override."""
    field = Settings.model_fields[name]
    default = field.get_default(call_default_factory=True)
    kinds = {a for a in typing.get_args(field.annotation)} or {field.annotation}
    choices = [c for kind in kinds if typing.get_origin(kind) is typing.Literal for c in typing.get_args(kind)]
    if typing.get_origin(field.annotation) is typing.Literal:
        choices = list(typing.get_args(field.annotation))
    if name == "baseline_prompt_file":
        files = [tmp_path / f"prompt-{i}.txt" for i in range(3)]
        for i, path in enumerate(files):
            path.write_text(f"Prompt {i}", "utf-8")
        return [str(path) for path in files]
    if name == "pii_regions":
        return [["FR"], ["DE", "AT"], ["CH"]]
    if name == "service_faults":
        return [{"seed": 1}, {"seed": 2}, {"seed": 3}]
    if choices:
        others = [c for c in choices if c != default] or choices
        return [others[0], default if len(others) == 1 else others[1], others[0]]
    if bool in kinds or field.annotation is bool:
        return [not default, default, not default]
    if int in kinds or field.annotation is int:
        base = default or 1
        return [base + 1, base + 2, base + 3]
    if float in kinds or field.annotation is float:
        base = default or 4.0
        return [base / 2, base / 4, base / 8]
    if dict in {typing.get_origin(k) for k in kinds} or typing.get_origin(field.annotation) is dict:
        return [{"A": "toml"}, {"B": "env"}, {"C": "override"}]
    return [f"{name}-toml", f"{name}-env", f"{name}-override"]  # str and Path


def as_env(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, list):
        return ",".join(value)
    return str(value)


class Resolved(Exception):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings


FLOWS = {  # each flow as a deployment or a direct call starts it, with what it needs besides settings
    "prepare": lambda overrides: prepare.fn(["data/raw/*"], overrides=overrides),
    "finetune": lambda overrides: finetune.fn(overrides=overrides),
    "retrain": lambda overrides: retrain.fn(overrides=overrides),
    "snapshot-eval": lambda overrides: snapshot_eval.fn("run", "ft:model", overrides=overrides),
}


@pytest.fixture
def resolution_of(monkeypatch):
    """Run a flow up to its resolution of settings, and return what it resolved."""
    import flows
    import flows.finetune
    import flows.prepare
    import flows.retrain
    import flows.snapshot_eval

    real = flows.run_settings

    def stop_after_resolving(name: str, overrides: dict | None, settings: Settings | None) -> Settings:
        raise Resolved(real(name, overrides, settings))

    for module in (flows.finetune, flows.prepare, flows.retrain, flows.snapshot_eval):
        monkeypatch.setattr(module, "run_settings", stop_after_resolving)

    def resolve(flow: str, overrides: dict | None = None) -> Settings:
        with pytest.raises(Resolved) as resolved:
            FLOWS[flow](overrides)
        return resolved.value.settings

    return resolve


@pytest.mark.parametrize("flow", FLOWS)
def test_every_key_toml_then_env_then_override_never_a_flow_default(flow, resolution_of, toml, tmp_path,
                                                                    monkeypatch):
    config = tmp_path / "ftflow.toml"
    for name in sorted(documented_keys() - {"key"}):
        in_toml, in_env, overridden = three_values(name, tmp_path)
        env = f"FTFLOW_{name.upper()}"
        shown = {"baseline_prompt_file": "baseline_system_prompt"}.get(name, name)
        expect = {"baseline_prompt_file": lambda v: Path(v).read_text("utf-8")}.get(name, lambda v: v)

        def check(settings: Settings, value: Any, origin: str, name: str = name, shown: str = shown,
                  expect: Any = expect) -> None:
            dumped = settings.model_dump(mode="json")[shown]
            wanted = Settings.model_validate({shown: expect(value)}).model_dump(mode="json")[shown]
            assert dumped == wanted, (flow, name, origin)
            assert settings.origins()[name] == origin, (flow, name)

        path = toml(**{name: str(in_toml) if isinstance(in_toml, Path) else in_toml})
        check(resolution_of(flow), in_toml, str(path.resolve()))
        monkeypatch.setenv(env, as_env(in_env))
        check(resolution_of(flow), in_env, env)
        check(resolution_of(flow, {name: overridden}), overridden, "override")
        monkeypatch.delenv(env)
        config.unlink()


@pytest.mark.parametrize(("where", "message"), [
    ("toml", "pii (from {toml}): Input should be 'off', 'report' or 'mask' (got 'sometimes')"),
    ("env", "pii (from FTFLOW_PII): Input should be 'off', 'report' or 'mask' (got 'sometimes')"),
    ("json", "speakers (from FTFLOW_SPEAKERS): not valid JSON"),
])
def test_a_bad_value_is_one_error_line_naming_the_key_and_its_origin(where, message, toml, monkeypatch):
    path = toml()
    if where == "toml":
        path = toml(pii="sometimes")
    elif where == "env":
        monkeypatch.setenv("FTFLOW_PII", "sometimes")
    else:
        monkeypatch.setenv("FTFLOW_SPEAKERS", "{Kunde: user")
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: " + message.format(toml=path.resolve())


def test_an_unknown_key_in_ftflow_toml_is_named(toml):
    path = toml(modle=NANO)
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {path}: unknown setting modle")


def test_config_prints_every_setting_with_its_origin_and_secrets_only_as_present(toml, monkeypatch):
    path = toml(model=NANO)
    monkeypatch.setenv("FTFLOW_PII", "off")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-do-not-show")
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://example.openai.azure.com")
    monkeypatch.setenv("FTFLOW_REGISTRY_URL", "postgresql+psycopg://ftflow:hunter2@db/ftflow")
    monkeypatch.delenv("TOGETHER_API_KEY", raising=False)
    result = CliRunner().invoke(app, ["config", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert set(shown) >= set(Settings.model_fields)
    assert shown["model"] == {"value": NANO, "origin": str(path.resolve())}
    assert shown["pii"] == {"value": "off", "origin": "FTFLOW_PII"}
    assert shown["suffix"] == {"value": "ftflow", "origin": "default"}
    assert shown["azure_endpoint"]["origin"] == "AZURE_OPENAI_ENDPOINT"  # a provider's own variable
    assert shown["OPENAI_API_KEY"] == {"value": "present", "origin": "OPENAI_API_KEY"}
    assert shown["TOGETHER_API_KEY"]["value"] == "absent"
    assert "hunter2" not in result.stdout and "sk-do-not-show" not in result.stdout
    table = CliRunner().invoke(app, ["config"])
    assert table.exit_code == 0 and "FTFLOW_PII" in table.stdout and "sk-do-not-show" not in table.stdout


def test_a_baseline_prompt_file_wins_only_from_the_same_or_a_higher_layer(toml, tmp_path, monkeypatch):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Aus der Datei.\n", "utf-8")
    toml(baseline_prompt_file=str(prompt))
    monkeypatch.setenv("FTFLOW_BASELINE_SYSTEM_PROMPT", "Aus der Umgebung.")
    assert get_settings().baseline_system_prompt == "Aus der Umgebung."
    settings = get_settings(baseline_prompt_file=str(prompt))
    assert settings.baseline_system_prompt == "Aus der Datei."
    assert settings.origins()["baseline_system_prompt"] == "--baseline-prompt-file (baseline_prompt_file)"


def test_the_service_settings_are_the_local_services_own(toml, monkeypatch):
    """service_* settings reach the in-process service; its defaults are those of localai's ServiceConfig."""
    from localai.config import ServiceConfig

    toml(service_tick_seconds=0.5)
    monkeypatch.setenv("FTFLOW_SERVICE_INSTRUCTION_FOLLOWING", "0.3")
    config = get_settings().service_config()
    assert (config.tick_seconds, config.instruction_following) == (0.5, 0.3)
    assert config.max_file_bytes == ServiceConfig.model_fields["max_file_bytes"].default


@pytest.mark.flow
def test_a_direct_call_runs_its_shards_where_the_settings_say(prefect_server, toml, tmp_path, monkeypatch):
    """workers, dask_address and shard_mb choose prepare's task runner in a deployment or direct call too."""
    from prefect.task_runners import ThreadPoolTaskRunner

    import tasks.shards.runner

    toml(work_dir=str(tmp_path / "work"), out_dir=str(tmp_path / "out"), shard_mb=0.5)
    monkeypatch.setenv("FTFLOW_WORKERS", "3")
    chosen: list[tuple] = []

    def task_runner_for(workers: int | None, dask_address: str | None, shard_bytes: int) -> ThreadPoolTaskRunner:
        chosen.append((workers, dask_address, shard_bytes))
        return ThreadPoolTaskRunner(max_workers=1)

    monkeypatch.setattr(tasks.shards.runner, "task_runner_for", task_runner_for)
    report = prepare(["data/raw/*"])
    assert chosen == [(3, None, 1 << 19)] and report["examples_written"]["train"] > 0


def test_a_registry_password_never_reaches_flow_parameters(toml, monkeypatch):
    """Resolved settings travel to subflows as a parameter, which Prefect stores as JSON."""
    from prefect import flow

    from ftflow.settings import settings_of_parameters

    url = "postgresql+psycopg://ftflow:hunter2@db/ftflow"
    monkeypatch.setenv("FTFLOW_REGISTRY_URL", url)
    settings = get_settings()
    stored = flow(lambda settings: None, name="stored").serialize_parameters({"settings": settings})
    assert "hunter2" not in json.dumps(stored) and stored["settings"]["registry_url"].startswith("postgresql")
    assert settings.registry_url == url  # the object the subflow gets keeps it
    assert settings_of_parameters(stored).registry_url == url  # a hook reading the stored run resolves it again
