"""The wheel alone is a working ftflow: its metadata declares every import, and it ships its data.

Build the wheel from a copy of the checkout, install it into a fresh virtualenv without the
dev extra, and run `ftflow prepare` on the sample data from outside the source tree. For
speed, the fresh virtualenv does not download its dependencies: it sees the installed
distributions of exactly the closure of the wheel's `Requires-Dist` (resolved against this
virtualenv, linked in through a .pth file), and nothing else. So an import the metadata does
not declare fails here, as it would for a user, and `pip check` checks the closure.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT

pytestmark = pytest.mark.wheel
OUR_PACKAGES = ("ftflow", "flows", "tasks", "localai")
SKIP_COPY = shutil.ignore_patterns(".venv", ".ftflow", ".git", "__pycache__", "*.egg-info", "build", "tests",
                                   ".pytest_cache", ".ruff_cache")


def run(*args: str | Path, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


def requirement_closure(requirements: list[str]) -> set[str]:
    """Names of the installed distributions the requirements pull in (markers and extras honoured)."""
    seen: set[str] = set()
    todo = [(Requirement(r), "") for r in requirements]
    while todo:
        requirement, extra = todo.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        extras = sorted(requirement.extras)
        key = f"{name}[{','.join(extras)}]"
        if key in seen:
            continue
        seen.add(key)
        for sub in metadata.distribution(name).requires or []:
            todo += [(Requirement(sub), e) for e in ["", *extras]]
    return {key.split("[")[0] for key in seen}


def link_distributions(names: set[str], target: Path) -> None:
    """Link each distribution's top-level files and its .dist-info into `target`."""
    target.mkdir()
    for name in names:
        dist = metadata.distribution(name)
        assert dist.files is not None, f"{name} has no RECORD"
        for file in dist.files:
            top = file.parts[0]
            if top in ("..", "__pycache__") or top.endswith(".pth") or (target / top).exists():
                continue
            source = Path(dist.locate_file(top))
            if source.parent == Path(dist.locate_file("")) and source.exists():
                (target / top).symlink_to(source)


# Imported only when their feature is asked for, from an optional extra (`dask`: --dask-address;
# `vertex`: the vertex backend and the service's Vertex and Cloud Storage dialects; `bedrock` and
# `fireworks`: those backends' SDKs, imported inside their provider modules).
OPTIONAL_IMPORTS = {"prefect_dask", "google", "google_crc32c", "boto3", "botocore", "fireworks"}


def third_party_imports() -> set[str]:
    """Top-level names every module of ours imports, function-level imports included."""
    names = set()
    for package in OUR_PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text("utf-8"))):
                if isinstance(node, ast.Import):
                    names |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in OUR_PACKAGES}


def test_the_wheel_installs_alone_and_prepares_the_samples(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=SKIP_COPY)  # symlinks followed: the wheel gets real files
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path / "dist",
        source)
    wheel = next((tmp_path / "dist").glob("ftflow-*.whl"))

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", wheel)
    requires = metadata.Distribution.at(next((venv / "lib").glob("python*/site-packages/ftflow-*.dist-info")))
    assert not [r for r in requires.requires if "extra ==" not in r and Requirement(r).name in ("pytest", "ruff")]
    link_distributions(requirement_closure([r for r in requires.requires if "extra ==" not in r]), tmp_path / "deps")
    purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    Path(purelib, "ftflow-test-deps.pth").write_text(str(tmp_path / "deps") + "\n")

    work = tmp_path / "work"
    work.mkdir()  # outside the source tree: nothing of the checkout is importable from here
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "FTFLOW_"))}
    env |= {"PREFECT_HOME": str(work / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180", "DO_NOT_TRACK": "1"}
    run(sys.executable, "-m", "pip", "--python", python, "check", env=env)
    probe = (
        "import importlib, json, pkgutil, sys\n"
        f"names = {sorted(third_party_imports() - OPTIONAL_IMPORTS)!r}\n"
        "for name in names: importlib.import_module(name)\n"
        f"for package in {OUR_PACKAGES!r}:\n"
        "    module = importlib.import_module(package)\n"
        "    for info in pkgutil.walk_packages(module.__path__, package + '.'):\n"
        "        importlib.import_module(info.name)\n"
        "import ftflow\n"
        "from ftflow.deployments import load_deployments\n"
        "from ftflow.resources import resource_text\n"
        "print(json.dumps({'ftflow': ftflow.__file__, 'suite': json.loads(resource_text('expectations/drift.json'))"
        "['name'], 'deployments': sorted(d.name for d in load_deployments())}))\n"
    )
    found = json.loads(run(python, "-c", probe, cwd=work, env=env).stdout.splitlines()[-1])
    assert found["ftflow"].startswith(purelib) and found["suite"] == "drift"
    assert found["deployments"] == ["finetune", "prepare", "retrain"]  # prefect.yaml and its entrypoints resolve

    prepared = run(venv / "bin" / "ftflow", "prepare", ROOT / "data" / "raw" / "*", "--out", work / "out", cwd=work,
                   env=env, timeout=600)
    report = json.loads((work / "out" / "report.json").read_text())
    assert report["examples_written"]["train"] > 300 and report["quality"]["success"], prepared.stdout
    assert json.loads((work / "out" / "quality.json").read_text())["suites"]["examples"]["results"]
