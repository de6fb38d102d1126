"""Moderation pre-check: flagged per category, quarantined with `reject`, cached by text digest."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from typer.testing import CliRunner

from ftflow.cli import app
from ftflow.errors import ConfigError
from ftflow.settings import get_settings
from tasks.moderation import ModerationCache, ModerationOptions, example_text, screen, text_sha256
from tests.conftest import chat, write_jsonl

VIOLENT = ["Ich werde ihn erschießen, wenn das Paket nicht kommt.", "I will kill you if the bike is late."]
SELF_HARM = ["Ich will mich umbringen, das Rad ist kaputt.", "Ich will nicht mehr leben."]


def test_example_text_is_the_messages_content():
    line = json.dumps({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]},
                                    {"role": "assistant", "content": "b"}]}).encode()
    assert example_text(line) == "a\nb"


@pytest.mark.parametrize("line", [
    '{"messages": [{"role": "user", "content": "Zahl 12345678901234567890123"}], "n": 123456789012345678901234}',
    '{"messages": [{"role": "user", "content": 123456789012345678901234}, {"role": "assistant", "content": "b"}]}',
    '{"messages": [{"role": "user", "content": "lone \\ud800 surrogate"}]}',
    '{"messages": [{"role": "user", "content": "x", "weight": NaN}]}',
    '{"messages": [{"role": "user", "content": "lone \\ud800 surrogate, 1234567890123456789"}]}',
    '{"messages": [{"role": "user", "content": "first", "content": "second"}]}',
    '{"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}, "s", {"text": 1}]}]}',
    '{"input": {"messages": [{"role": "user", "content": "q"}]}, "preferred_output": [{"role": "assistant", '
    '"content": "\\u00fc \\n gut"}], "non_preferred_output": [{"role": "assistant", "content": "schlecht"}]}',
    '{"messages": [{"role": "user", "content": "Emoji \\ud83d\\udeb2 und \\"Zitat\\" \\\\ 1.5e400"}]}',
])
def test_example_text_reads_as_the_exact_reader_does(line):
    from ftflow.jsonl import loads_exact
    from tasks.moderation import record_text

    def outcome(read):
        try:
            return read()
        except ValueError as exc:  # what ftflow did not write: the same refusal
            return type(exc)

    assert outcome(lambda: example_text(line.encode())) == outcome(lambda: record_text(loads_exact(line.encode())))


def test_screen_batches_only_uncached_texts_and_a_second_pass_sends_nothing(tmp_path):
    lines = [json.dumps(chat(f"Frage {i}", "Antwort")) for i in range(7)] + [json.dumps(chat(VIOLENT[1], "Nein"))]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    sent: list[list[str]] = []

    def classify(texts: list[str]) -> list[list[str]]:
        sent.append(texts)
        return [["violence", "harassment/threatening"] if "kill" in t else [] for t in texts]

    cache = ModerationCache(tmp_path / "cache.sqlite3")
    counts: Counter[str] = Counter()
    assert screen(path, classify, cache, "m", 3, counts) == {7: ["violence", "harassment/threatening"]}
    assert [len(batch) for batch in sent] == [3, 3, 2] and counts["requests"] == 3 and counts["cached"] == 0
    again: Counter[str] = Counter()
    assert screen(path, classify, ModerationCache(tmp_path / "cache.sqlite3"), "m", 3, again) == {
        7: ["violence", "harassment/threatening"]}
    assert len(sent) == 3 and again["requests"] == 0 and again["cached"] == 8
    assert cache.get_many("other-model", [text_sha256(example_text(lines[7].encode()))]) == {}  # keyed by model too


def test_answers_are_committed_every_half_second_and_on_close(tmp_path, monkeypatch):
    path = tmp_path / "cache.sqlite3"
    cache = ModerationCache(path)
    cache.put_many("m", {"a": []})
    assert ModerationCache(path).get_many("m", ["a"]) == {}  # within the half second: not committed yet
    monkeypatch.setattr(ModerationCache, "COMMIT_SECONDS", 0.0)
    cache.put_many("m", {"b": ["violence"]})
    assert ModerationCache(path).get_many("m", ["a", "b"]) == {"a": [], "b": ["violence"]}
    monkeypatch.setattr(ModerationCache, "COMMIT_SECONDS", 3600.0)
    cache.put_many("m", {"c": []})
    cache.close()
    assert ModerationCache(path).get_many("m", ["c"]) == {"c": []}


def test_requests_in_flight_at_once_give_what_one_at_a_time_gives(tmp_path):
    import threading
    import time

    lines = [json.dumps(chat(f"Frage {i}" if i % 5 else f"{VIOLENT[i % 2]} ({i})", "Antwort")) for i in range(40)]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    running, most = [0], [0]
    lock = threading.Lock()

    def classify(texts: list[str]) -> list[list[str]]:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)  # a round trip: the requests overlap
        with lock:
            running[0] -= 1
        return [["violence"] if "kill" in t or "erschießen" in t else [] for t in texts]

    results = {}
    for concurrency in (1, 4):
        counts: Counter[str] = Counter()
        flagged = screen(path, classify, ModerationCache(tmp_path / f"{concurrency}.sqlite3"), "m", 3, counts,
                         concurrency)
        results[concurrency] = (flagged, dict(counts))
    assert results[1] == results[4] and len(results[1][0]) == 8
    assert results[4][1] == {"examples": 40, "requests": 14, "cached": 0}
    assert most[0] == 4  # four requests were in flight together


def test_the_default_follows_the_backends_endpoint_and_reject_needs_one():
    assert ModerationOptions.from_settings(get_settings(backend="local")).mode == "report"
    assert ModerationOptions.from_settings(get_settings(backend="openai")).model == "omni-moderation-latest"
    assert ModerationOptions.from_settings(get_settings(backend="together")).mode == "off"
    with pytest.raises(ConfigError, match="azure backend has no moderation endpoint"):
        ModerationOptions.from_settings(get_settings(backend="azure", moderation="reject"))


@pytest.mark.flow
@pytest.mark.service
def test_flagged_lines_are_counted_then_quarantined_and_a_rerun_asks_nothing(prefect_server, local_service, tmp_path,
                                                                            monkeypatch):
    monkeypatch.setenv("FTFLOW_SERVICE_URL", local_service.base_url)
    monkeypatch.setenv("FTFLOW_SERVICE_API_KEY", local_service.api_key)
    monkeypatch.setenv("FTFLOW_WORK_DIR", str(tmp_path / "work"))
    benign = [chat(f"Frage {i}: Wo ist Bestellung AR-{i}? Das Messer liegt bei.", f"AR-{i} ist unterwegs.")
              for i in range(30)]
    flagged = [chat(text, "Bitte wende dich an den Support.") for text in VIOLENT + SELF_HARM]
    data = write_jsonl(tmp_path / "data.jsonl", [*benign[:10], *flagged, *benign[10:]])
    moderations = local_service.service.openai.moderations

    def prepare(out: str, mode: str) -> dict:
        monkeypatch.setenv("FTFLOW_MODERATION", mode)
        result = CliRunner().invoke(app, ["prepare", str(data), "--out", str(tmp_path / out)])
        assert result.exit_code == 0, (result.output, result.stderr)
        assert "moderation" in result.output and "4 of 34 flagged" in result.output
        return json.loads((tmp_path / out / "report.json").read_text())

    report = prepare("report", "report")
    assert report["moderation"]["by_category"] == {"self-harm": 2, "self-harm/intent": 2, "violence": 2}
    assert report["moderation"]["flagged"] == 4 and report["moderation"]["requests"] == moderations.requests > 0
    assert sum(report["examples_written"].values()) == 34 and report["rejected"] == {}
    asked = moderations.requests

    async def table() -> list:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        async with get_client() as client:
            found = await client.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["ftflow-moderation"])), limit=1, sort="CREATED_DESC")
        data = found[0].data
        return data if isinstance(data, list) else json.loads(data)

    import asyncio

    assert asyncio.run(table()) == [{"category": c, "flagged examples": 2, "quarantined": 0}
                                    for c in ("self-harm", "self-harm/intent", "violence")]

    quarantined = prepare("reject", "reject")  # the same texts: every answer comes from the cache
    assert moderations.requests == asked and quarantined["moderation"]["requests"] == 0
    assert quarantined["moderation"]["cached"] == 34
    assert quarantined["rejected"] == {"moderation:self-harm/intent": 2, "moderation:violence": 2}
    assert sum(quarantined["examples_written"].values()) == 30
    assert quarantined["records_read"] == 34 and quarantined["dataset_sha256"] != report["dataset_sha256"]
    rejected = [json.loads(line) for line in (tmp_path / "reject" / "rejected.jsonl").read_text().splitlines()]
    assert sorted(r["record"]["messages"][0]["content"] for r in rejected) == sorted(VIOLENT + SELF_HARM)
    assert sorted(r["loc"] for r in rejected) == ["line 11", "line 12", "line 13", "line 14"]
    kept = [json.loads(line)["messages"] for name in ("train", "validation")
            for line in (tmp_path / "reject" / f"{name}.jsonl").read_text().splitlines()]
    assert len(kept) == 30 and not any(m[0]["content"] in VIOLENT + SELF_HARM for m in kept)
    again = prepare("reject", "reject")  # into the same folder: what moderation rewrote is still ftflow's
    assert again["dataset_sha256"] == quarantined["dataset_sha256"]
    assert not (tmp_path / "reject" / ".staged").exists()  # the quarantined lines live on in rejected.jsonl only


@pytest.mark.service
def test_the_classifier_reads_the_services_json_as_the_sdks_models_read_it(local_service, client):
    from tasks.moderation import flagged_categories_reference, openai_classifier

    texts = ["Wo ist Bestellung AR-1?", *VIOLENT, *SELF_HARM, "I want to kill myself", "ÜBERALL BLUT, zerstückelt",
             "Kill them. Kill you. Stab him."]
    answers = openai_classifier(client, "omni-moderation-latest")(texts)
    assert answers == flagged_categories_reference(client.moderations.create(model="omni-moderation-latest",
                                                                              input=texts))
    assert answers[0] == [] and answers[1] == ["violence"] and answers[5] == ["self-harm/intent", "self-harm"]
    assert local_service.service.openai.moderations.requests == 2
