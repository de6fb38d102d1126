"""Trim OpenAI's openapi.yaml to the paths ftflow's service implements, plus every component they reference.

    python tests/data/trim_openai_openapi.py FULL_SPEC tests/data/openai-openapi.yaml

(see openai-openapi.SOURCE.md beside this file).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import yaml

PATH_PREFIXES = ("/files", "/uploads", "/fine_tuning/", "/models", "/chat/completions", "/moderations")
NAMED_BY_TESTS = ("ErrorResponse", "CreateFineTuningJobRequest", "FineTuningJob")


def refs(node: Any) -> Iterator[str]:
    """Every `$ref` under a node."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def trim(spec: dict[str, Any]) -> dict[str, Any]:
    paths = {path: item for path, item in spec["paths"].items() if path.startswith(PATH_PREFIXES)}
    kept: dict[tuple[str, str], Any] = {}
    todo = [*refs(paths), *(f"#/components/schemas/{name}" for name in NAMED_BY_TESTS)]
    while todo:
        _, _, kind, name = todo.pop().split("/", 3)
        if (kind, name) not in kept:
            kept[(kind, name)] = spec["components"][kind][name]
            todo += refs(kept[(kind, name)])
    trimmed = {key: spec[key] for key in ("openapi", "info", "servers", "security")}
    trimmed["paths"] = paths
    trimmed["components"] = {}
    for (kind, name), node in sorted(kept.items()):
        trimmed["components"].setdefault(kind, {})[name] = node
    trimmed["components"]["securitySchemes"] = spec["components"]["securitySchemes"]
    return trimmed


if __name__ == "__main__":
    source, target = sys.argv[1:3]
    with open(source) as f:
        full = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    with open(target, "w") as f:
        yaml.safe_dump(trim(full), f, sort_keys=False, allow_unicode=True, width=120)
