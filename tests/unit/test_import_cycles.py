"""No import cycles between the modules of ftflow/, tasks/, flows/ and localai/.

Imports inside functions (lazy ones) count: a cycle hidden in a function is still two modules
that cannot be understood, tested or moved one without the other. pyproject.toml's contracts
(`lint-imports`) keep the layers pointing one way; this reads the same import graph (grimp,
import-linter's graph library) and names every cycle, with the line of each import in it.
"""

from __future__ import annotations

import grimp
import pytest

PACKAGES = ("ftflow", "tasks", "flows", "localai")


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Each cycle once, as the modules along it: for every import `a -> b` that `b` leads back
    from, `a` then the shortest way from `b` back to `a`."""
    found: dict[frozenset[tuple[str, str]], list[str]] = {}
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back is None:
                continue
            cycle = [importer, *back[:-1]]
            edges = frozenset(zip(cycle, [*cycle[1:], cycle[0]], strict=True))
            found.setdefault(edges, cycle)
    return list(found.values())


def describe(graph: grimp.ImportGraph, cycle: list[str]) -> str:
    """`a -> b (line 12) -> a (line 40)`: each step with the line(s) of its import statement."""
    steps = [cycle[0]]
    for importer, imported in zip(cycle, [*cycle[1:], cycle[0]], strict=True):
        lines = sorted({d["line_number"] for d in graph.get_import_details(importer=importer, imported=imported)})
        steps.append(f"{imported} (line {', '.join(map(str, lines))})")
    return " -> ".join(steps)


def test_there_are_no_import_cycles():
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    if cycles := import_cycles(graph):
        pytest.fail(f"{len(cycles)} import cycles (lazy imports included):\n"
                    + "\n".join(describe(graph, cycle) for cycle in cycles), pytrace=False)


def test_a_cycle_through_a_lazy_import_is_found_and_named():
    graph = grimp.ImportGraph()
    graph.add_import(importer="p.a", imported="p.b", line_number=3, line_contents="from p.b import x")
    graph.add_import(importer="p.b", imported="p.c", line_number=5, line_contents="from p.c import y")
    graph.add_import(importer="p.c", imported="p.a", line_number=40, line_contents="    from p.a import z")
    graph.add_import(importer="p.c", imported="p.d", line_number=6, line_contents="from p.d import w")
    assert import_cycles(graph) == [["p.a", "p.b", "p.c"]]
    assert describe(graph, ["p.a", "p.b", "p.c"]) == "p.a -> p.b (line 3) -> p.c (line 5) -> p.a (line 40)"
