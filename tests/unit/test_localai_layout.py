"""localai's layout: one subpackage per provider's dialect, the shared machinery beside them.

The dialects build on the shared machinery (the engine, the store, the errors, the gateway's
Dialect) and never on each other; the shared machinery knows no dialect, except the app that
assembles the service from them (and the server, its child process and `python -m localai` that
run it). No module imports itself back through a chain, lazy imports inside functions included.
"""

from __future__ import annotations

import grimp
import pytest

DIALECTS = ("localai.openai", "localai.azure", "localai.together", "localai.vertex", "localai.aws", "localai.fireworks")
ASSEMBLY = ("localai.app", "localai.server", "localai.process", "localai.__main__")


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("localai", "ftflow", "tasks", "flows")


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def import_cycles(graph: grimp.ImportGraph, package: str) -> list[tuple[str, ...]]:
    """Each import a -> b inside `package` that a chain from b leads back to a: a, b, ..., a."""
    cycles = set()
    for module in (m for m in graph.modules if in_package(m, package)):
        for imported in graph.find_modules_directly_imported_by(module):
            back = graph.find_shortest_chain(importer=imported, imported=module) if in_package(imported, package) else None
            if back:
                cycles.add((module, *back))
    return sorted(cycles)


def test_localai_has_no_import_cycles(graph):
    assert import_cycles(graph, "localai") == []


def test_no_dialect_imports_another(graph):
    crossings = [(importer, imported) for importer in DIALECTS for imported in DIALECTS
                 if importer != imported and graph.chain_exists(importer=importer, imported=imported, as_packages=True)]
    assert crossings == []


def test_the_shared_machinery_knows_no_dialect(graph):
    shared = [m for m in graph.modules if in_package(m, "localai") and m != "localai" and m not in ASSEMBLY
              and not any(in_package(m, dialect) for dialect in DIALECTS)]
    assert "localai.engine.jobs" in shared and "localai.dialect" in shared
    reaching = [(module, dialect) for module in shared for dialect in DIALECTS
                if graph.chain_exists(importer=module, imported=dialect, as_packages=True)]
    assert reaching == []


def test_localai_imports_nothing_of_the_pipeline(graph):
    """Only ftflow's data (price catalog, encodings); never the flows or tasks the service is tested against."""
    for pipeline in ("tasks", "flows"):
        assert not graph.direct_import_exists(importer="localai", imported=pipeline, as_packages=True), pipeline
