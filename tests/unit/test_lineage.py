"""What a prepared dataset is made of (`inputs_sha256`), without Prefect; retrain's use of it is
tested end to end in tests/integration/test_retrain_flow.py."""

from __future__ import annotations

import pytest

from ftflow.settings import DEFAULT_MODEL, get_settings
from tasks.lineage import current_inputs_sha256, fingerprint_inputs
from tasks.moderation import ModerationOptions
from tasks.passes import record_pass_for
from tasks.provider_rules import rules_backend
from tasks.readers import ExtractOptions
from tasks.report import GateOptions
from tasks.shards.plan import plan_shards
from tests.conftest import chat, write_jsonl


def digest(sources: list[str], **overrides) -> str:
    return current_inputs_sha256(sources, get_settings(overrides))


@pytest.fixture
def source(tmp_path):
    return write_jsonl(tmp_path / "chats.jsonl", [chat(f"Frage {i}", f"Antwort {i}") for i in range(20)])


def test_the_same_sources_and_settings_give_the_same_digest(source, tmp_path):
    assert digest([str(source)]) == digest([str(tmp_path / "*.jsonl")])  # a glob that matches the same file
    # What prepare records (from its plan) is what retrain computes before preparing.
    plan = plan_shards([str(source)], ExtractOptions(), shard_bytes=64)  # the shard size is not an input
    settings = get_settings({})
    assert settings.model == DEFAULT_MODEL
    assert fingerprint_inputs.fn(plan, record_pass_for(settings), GateOptions.from_settings(settings),
                                 ModerationOptions.from_settings(settings), rules_backend(settings.backend)
                                 ) == digest([str(source)])


def test_every_input_of_the_dataset_changes_the_digest(source, tmp_path):
    before = digest([str(source)])
    assert digest([str(source)], system_prompt="Antworte kurz.") != before
    assert digest([str(source)], validation_fraction=0.2) != before
    assert digest([str(source)], max_cost_usd=1.0) != before  # a gate decides the run too
    other = write_jsonl(tmp_path / "more.jsonl", [chat("Noch eine Frage", "Noch eine Antwort")])
    assert digest([str(source), str(other)]) != before
    with open(source, "a", encoding="utf-8") as f:
        f.write("{not json\n")
    assert digest([str(source)]) != before


def test_a_sql_source_has_no_digest(tmp_path):
    """Its rows change without its query changing: only preparing can tell."""
    database = tmp_path / "chats.sqlite3"
    options = ExtractOptions(sql_url=f"sqlite:///{database}", query="SELECT 1")
    plan = plan_shards([], options)
    settings = get_settings({})
    assert fingerprint_inputs.fn(plan, record_pass_for(settings, options), GateOptions(),
                                 ModerationOptions.from_settings(settings), None) is None
