"""JSON written and read back by ftflow: orjson's bytes, integers beyond 64 bits kept exactly."""

from __future__ import annotations

import orjson
import pytest

from ftflow.jsonl import JsonlWriter, dumps_exact, iter_records, loads_exact
from tests.conftest import chat

ORDINARY = [
    chat("Grüße, \"Anna\" \\ <tag>\n\t\u2028 \x01 \x7f 😀", "ok"),
    {"n": [0, -0.0, 1.5, 1e16, 1e-7, 1e22, 2**63 - 1, -(2**63), 2**64 - 1, True, None], "z": {"b": 1, "a": 2}},
]


@pytest.mark.parametrize("value", ORDINARY)
def test_a_value_without_long_integers_is_written_as_orjson_writes_it(value):
    assert dumps_exact(value) == orjson.dumps(value)
    assert dumps_exact(value, sort_keys=True) == orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def test_integers_beyond_64_bits_are_written_and_read_back_exactly(tmp_path):
    value = {"z": "Grüße \"x\"\n", "a": [2**64, -(2**63) - 1, int("9" * 320), 1.5]}
    written = dumps_exact(value)
    assert written == f'{{"z":"Grüße \\"x\\"\\n","a":[{2**64},{-(2**63) - 1},{"9" * 320},1.5]}}'.encode()
    assert dumps_exact(value, sort_keys=True).startswith(b'{"a":[18446744073709551616,')
    assert loads_exact(written) == value
    with JsonlWriter(tmp_path / "a.jsonl") as writer:
        writer.write(value)
    assert list(iter_records(tmp_path / "a.jsonl")) == [value]


def test_what_json_cannot_hold_is_still_refused():
    with pytest.raises(TypeError):
        dumps_exact({"x": {1, 2}})
    with pytest.raises(TypeError):
        dumps_exact({"x": b"bytes", "n": 2**64})
