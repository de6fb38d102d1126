"""Every module ftflow imports at run time comes from a distribution it declares itself.

An import that is only satisfied because another dependency happens to pull its package in
(typer and rich through prefect, yaml through the dev extra) breaks when that dependency
changes, so each one must be a direct `dependencies` entry of pyproject.toml.
"""

from __future__ import annotations

import tomllib
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT
from tests.integration.test_wheel import third_party_imports


def test_every_runtime_import_is_a_declared_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # An optional extra's package (prefect-dask for --dask-address) counts: it is imported only
    # when its feature is asked for, and the message then says which extra to install.
    optional = [r for extra, reqs in project["optional-dependencies"].items() if extra != "dev" for r in reqs]
    declared = {canonicalize_name(Requirement(r).name) for r in [*project["dependencies"], *optional]}
    providers = metadata.packages_distributions()
    undeclared = {name: providers.get(name) for name in third_party_imports()
                  if not {canonicalize_name(d) for d in providers.get(name, [])} & declared}
    assert not undeclared, f"imported but not in [project] dependencies: {undeclared}"


def test_bundled_files_are_the_repository_files():
    from ftflow.resources import resource_text

    for name in ("expectations/examples.json", "expectations/dataset.json", "expectations/drift.json",
                 "prefect.yaml", "data/answer_schema.json", "data/production_prompt.txt"):
        assert resource_text(name) == (ROOT / name).read_text("utf-8"), name
