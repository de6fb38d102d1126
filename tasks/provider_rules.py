"""Provider rules: the backend's own per-example limits, checked before anything is uploaded.

OpenAI's rules run per shard (tasks/checks.py). A backend that trains on another format or
with other limits (Gemini on Vertex: its token limit, roles it has no place for) has a rules
function in `RULES`: one line of train/validation as a dict (a chat example, or a preference
pair with method dpo) -> `(reason, detail)` when the backend would refuse it, else None.
Reasons are stable snake_case names, listed in docs/rejections.md.

The stage runs in prepare after de-duplication (and moderation) and quarantines what the
rules refuse (tasks/quarantine.py) into `provider-rejected.jsonl`, so counts add up and the
provider fails no job hours later for one example.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from ftflow.formats.bedrock import NOVA_REASONS, nova_rules
from ftflow.formats.gemini import GEMINI_REASONS, gemini_rules
from ftflow.jsonl import loads_exact
from tasks.quarantine import SPLITS, Quarantined, Verdicts, quarantine
from tasks.reduce import ReduceResult

Rules = Callable[[dict[str, Any]], "tuple[str, str] | None"]

# backend -> its rules; a backend absent here has none beyond OpenAI's. Bedrock: Nova's rules
# (reserved strings, first turn user, last assistant), the strictest of its formats, whatever
# the base model; raw transcripts' "User:"/"Bot:" prefixes are speakers by then.
RULES: dict[str, Rules] = {"vertex": gemini_rules, "bedrock": nova_rules}
RULE_REASONS = GEMINI_REASONS | NOVA_REASONS  # every reason a provider's rules give


def rules_for(backend: str) -> Rules | None:
    return RULES.get(backend)


def rules_backend(backend: str) -> str | None:
    """The backend when it has rules of its own (what a dataset's inputs digest records), else None."""
    return backend if backend in RULES else None


def judge_split(path: Path, rules: Rules) -> dict[int, tuple[str, str]]:
    """The verdicts on one split file: line index -> (reason, detail), for the lines the rules refuse."""
    verdicts: dict[int, tuple[str, str]] = {}
    with open(path, "rb") as f:
        for index, line in enumerate(f):
            if (verdict := rules(loads_exact(line))) is not None:
                verdicts[index] = verdict
    return verdicts


def apply_rules(split: ReduceResult, staged_dir: Path, rules: Rules | None) -> Quarantined:
    """Quarantine the examples of train/validation that `rules` refuse (None: no rules, nothing moves)."""
    if rules is None:
        return Quarantined(split=split)
    paths = {"train": Path(split.train_path), "validation": Path(split.validation_path)}
    verdicts: Verdicts = {name: judge_split(paths[name], rules) for name in SPLITS}
    return quarantine(split, verdicts, staged_dir / "provider-rejected.jsonl")


@task(name="check-provider-rules", cache_policy=NO_CACHE)
def check_provider_rules(split: ReduceResult, staged_dir: str, backend: str) -> Quarantined:
    """Return the split without the examples the backend's rules refuse (quarantined with a reason)."""
    from prefect.logging import get_run_logger

    result = apply_rules(split, Path(staged_dir), rules_for(backend))
    if result.rejected:
        get_run_logger().info("provider rules (%s): %d examples quarantined: %s", backend,
                              sum(result.rejected.values()),
                              ", ".join(f"{reason} {n}" for reason, n in result.rejected.items()))
    return result

