"""The fast chat pass against the reference at scale: 100,000 synthetic conversations (the bench's
generator), cut into shards as prepare cuts them, every shard's files the same byte for byte.

The unit tests (tests/unit/test_fast_pass.py) hold the two to it on small and odd input; this
one on the volume where the fast pass's memo of strings fills, starts afresh and fills again.
"""

from __future__ import annotations

import pytest

from bench.prepare_vs_cookbook import write_input
from tasks.passes.fast_chat import MEMO_ENTRIES
from tasks.shards.plan import plan_shards
from tests.unit.test_fast_pass import SETTINGS, assert_same_shards, passes

pytestmark = pytest.mark.slow


def test_100k_synthetic_conversations_give_the_same_shards(tmp_path):
    source = tmp_path / "input.jsonl"
    write_input(source, 100_000)
    reference, fast = passes(SETTINGS["prompt replaced"])
    shards = plan_shards([str(source)], reference.extract, 48 << 20).shards
    assert len(shards) >= 2
    written = assert_same_shards(shards, tmp_path, reference, fast)
    assert sum(shard["result.json"]["records_read"] for shard in written) == 100_000
    # Each kept conversation has a question and an answer of its own: a full shard's memo fills and is cleared.
    assert max(shard["result.json"]["kept"] for shard in written) * 2 > MEMO_ENTRIES
