"""The preference prepare pass without Prefect: counting in pairs, the conversation split, suite, budget."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd
import pytest

from ftflow.errors import ConfigError
from tasks.budget import estimate
from tasks.passes.preference import PAIR_FEATURE_SCHEMA, PreferencePass, figures_of
from tasks.preference import PreferenceFigures
from tasks.readers import ExtractOptions
from tasks.reduce import dedup_and_split
from tasks.report import PreferenceGates
from tasks.shards.plan import plan_whole_files
from tasks.shards.store import prepare_shard
from tasks.suites import run_suites
from tasks.transform import TransformOptions
from tests.conftest import write_jsonl

MODEL = "gpt-4.1-mini-2025-04-14"


def settings(fraction: float = 0.5, **transform) -> PreferencePass:
    return replace(PreferencePass.for_model(MODEL, ExtractOptions(), TransformOptions(**transform), fraction),
                   min_rating_margin=1.0)


def openai_line(question: str, preferred: str, other: str) -> dict:
    return {"input": {"messages": [{"role": "user", "content": question}]},
            "preferred_output": [{"role": "assistant", "content": preferred}],
            "non_preferred_output": [{"role": "assistant", "content": other}]}


def run(paths: list[str], tmp_path: Path, shard_settings: PreferencePass):
    results = [prepare_shard(shard, shard_settings, tmp_path / "work") for shard in plan_whole_files(paths).shards]
    split = dedup_and_split(results, tmp_path / "staged", tmp_path, schema=PAIR_FEATURE_SCHEMA)
    return results, split


def test_rated_rows_count_once_per_conversation_and_the_invariant_holds(tmp_path):
    rows = [
        ("c1", "Wo ist mein Rad?", "Es ist unterwegs, Lieferung morgen.", "5"),
        ("c1", "Wo ist mein Rad?", "Keine Ahnung.", "1"),
        ("c1", "Wo ist mein Rad?", "Schau im Konto nach.", "3"),  # neither best nor worst: part of c1's record
        ("c2", "Kann ich zurückgeben?", "Ja, 30 Tage.", "4"),  # alone: unpaired_rating
        ("c3", "Akku kaputt?", "Bitte in die Werkstatt.", "4"),
        ("c3", "Akku kaputt?", "Kauf einen neuen.", "3.5"),  # margin 0.5 < 1: rating_margin_too_small
        ("c4", "Rechnung?", "Im Konto.", "sehr gut"),  # its own record: invalid_rating
        ("c4", "Rechnung?", "Im Konto, als PDF.", "2"),  # c4's readable rows: unpaired_rating
    ]
    path = tmp_path / "rated.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["conversation_id", "prompt", "answer", "rating"])
        writer.writerows(rows)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        openai_line("Frage eins?", "Gute Antwort.", "Schlechte Antwort."),
        openai_line("Frage eins?", "Gute  antwort.", "Schlechte Antwort."),  # same pair after normalisation
        openai_line("Frage zwei?", "Gleich.", "gleich."),
        "{kaputt",
        {"messages": []},
    ])
    results, split = run([str(path), str(pairs)], tmp_path, settings())
    rated, lines = results
    assert rated.records_read == 5  # c1..c4 plus the unreadable rating
    assert rated.kept == 1
    assert rated.rejected == {"extract": {"invalid_rating": 1},
                              "quality": {"rating_margin_too_small": 1, "unpaired_rating": 2}}
    assert lines.records_read == 5
    assert lines.rejected == {"extract": {"invalid_json": 1, "unknown_preference_shape": 1},
                              "quality": {"identical_outputs": 1}}
    rejected = sum(sum(stage.values()) for r in results for stage in r.rejected.values())
    assert split.duplicates_removed == 1
    assert rated.records_read + lines.records_read == split.train + split.validation + rejected + 1
    kept = json.loads(Path(split.train_path if split.train else split.validation_path).read_text().splitlines()[0])
    assert set(kept) == {"input", "preferred_output", "non_preferred_output"}


def test_pairs_of_one_conversation_never_straddle_the_split(tmp_path):
    records = [openai_line(f"Frage {c}?", f"Antwort {c} Variante {v}", f"Falsch {c} Variante {v}")
               for c in range(40) for v in range(3)]
    path = write_jsonl(tmp_path / "pairs.jsonl", records)
    _, split = run([str(path)], tmp_path, settings(fraction=0.5))
    assert split.train and split.validation
    sides: dict[str, set[str]] = {}
    for side, file in (("train", split.train_path), ("validation", split.validation_path)):
        for line in Path(file).read_text().splitlines():
            question = json.loads(line)["input"]["messages"][-1]["content"]
            sides.setdefault(question, set()).add(side)
    assert len(sides) == 40
    assert all(len(s) == 1 for s in sides.values())


def test_pii_is_masked_in_input_and_outputs_and_the_system_prompt_is_set(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [openai_line("Meine Mail: max@example.com", "Danke max@example.com",
                                                          "Schreib an max@example.com")])
    _, split = run([str(path)], tmp_path, settings(fraction=0.0, system_prompt="KURZ"))
    text = Path(split.train_path).read_text()
    assert "max@example.com" not in text and text.count("[EMAIL]") == 3
    assert json.loads(text)["input"]["messages"][0] == {"role": "system", "content": "KURZ"}


def test_over_the_token_limit_is_rejected(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [openai_line("Frage?", "wort " * 400, "kurz")])
    results, _ = run([str(path)], tmp_path, replace(settings(), training_context=200))
    assert results[0].rejected["quality"] == {"too_long": 1}


def test_preference_records_are_read_by_the_chat_records_json_rule(tmp_path):
    """Repeated keys, NaN and numbers beyond a double, nesting and length over the run's limits are
    rejected with the chat readers' reasons; integers beyond 64 bits reach the pairs as written."""
    good = [openai_line(f"Frage {i}?", f"Antwort {i}.", f"Falsch, das ist nicht die Antwort {i}.") for i in range(6)]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"maximum": 123456789012345678901234567890}}}]
    good[0]["input"]["tools"] = tools
    bad_input = json.dumps(openai_line("x?", "y.", "z, nein.")).replace('{"messages"', '{"x": %s, "messages"', 1)
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": json.dumps([[[[[[[[1]]]]]]]])}}
    deep_arguments = openai_line("Wo?", "Da.", "Weiß nicht, frag später nochmal.")
    deep_arguments["input"]["messages"] += [{"role": "assistant", "tool_calls": [call]},
                                            {"role": "tool", "tool_call_id": "c", "content": "ok"},
                                            {"role": "user", "content": "Und?"}]
    lines = [*good, bad_input % '{"a": 1, "a": 2}', bad_input % "NaN", bad_input % "1e999",
             bad_input % ("[" * 8 + "]" * 8), bad_input % json.dumps("x" * 2000), deep_arguments]
    path = write_jsonl(tmp_path / "pairs.jsonl", lines)
    in_array = openai_line("Frage im Array?", "Hier.", "Falsch, das ist nicht die Antwort im Array.")
    in_array["input"]["tools"] = tools
    (tmp_path / "pairs.json").write_text(json.dumps([in_array], indent=2)[:-1] + ', {"input": {}, "input": {}}]')
    strict = replace(settings(), extract=replace(settings().extract, max_record_depth=7, max_record_bytes=1024))
    (lines_result, array_result), split = run([str(path), str(tmp_path / "pairs.json")], tmp_path, strict)
    assert lines_result.rejected == {"extract": {"duplicate_key": 1, "invalid_json": 2, "too_deep": 1, "too_long": 1},
                                     "quality": {"too_deep": 1}}
    assert array_result.rejected == {"extract": {"duplicate_key": 1}, "quality": {}}
    written = Path(split.train_path).read_text() + Path(split.validation_path).read_text()
    assert written.count('"maximum":123456789012345678901234567890') == 2  # from the lines and the array


def test_a_rated_rows_conversation_given_as_json_text_is_read_by_the_same_rule(tmp_path):
    path = tmp_path / "rated.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["conversation_id", "messages", "answer", "rating"])
        writer.writerow(["c1", '[{"role": "user", "content": "Wo?"}]', "Da.", "1"])
        writer.writerow(["c1", '[{"role": "user", "content": "Wo?"}]', "Weiß nicht, frag später.", "0"])
        writer.writerow(["c2", '[{"role": "user", "content": "a", "content": "b"}]', "Da.", "1"])
        writer.writerow(["c3", '[{"role": "user", "content": NaN}]', "Da.", "1"])
    [result], _ = run([str(path)], tmp_path, settings())
    assert result.kept == 1
    assert result.rejected == {"extract": {"duplicate_key": 1, "invalid_json": 1}, "quality": {}}


def test_the_preference_pass_takes_the_runs_extract_settings():
    from ftflow.settings import Settings

    shard_settings = PreferencePass.from_settings(Settings(model=MODEL, max_record_depth=9))
    assert shard_settings.extract.max_record_depth == 9


def test_a_model_without_dpo_is_refused_before_any_work():
    with pytest.raises(ConfigError, match="does not take DPO"):
        PreferencePass.for_model("gpt-4o-mini-2024-07-18", ExtractOptions(), TransformOptions(), 0.1)


def test_billing_tokens_are_trained_tokens_of_training_pairs_times_epochs():
    features = pd.DataFrame({
        "split": ["train", "train", "validation"], "tokens": [30, 40, 50], "input_tokens": [10, 20, 30],
        "preferred_tokens": [5, 10, 15], "non_preferred_tokens": [3, 4, 5], "trained_tokens": [28, 54, 80],
    })
    budget = estimate(features, settings(), model=MODEL, encoding="o200k_base", over_limit=0, n_epochs=2,
                      max_cost_usd=None)
    assert budget.billing_tokens == (28 + 54) * 2
    assert budget.estimated_cost_usd == round(164 / 1_000_000 * 5.00, 4)
    default = estimate(features, settings(), model=MODEL, encoding="o200k_base", over_limit=0, n_epochs=None,
                       max_cost_usd=None)
    assert default.n_epochs == 25  # OpenAI's rule as for supervised: 2 pairs -> 100 // 2, capped at 25


def suite_verdict(figures: PreferenceFigures, options: PreferenceGates) -> list[str]:
    features = pd.DataFrame({"tokens": [10], "assistant_tokens": [5], "n_messages": [2], "n_user": [1],
                             "n_assistant": [1], "has_system": [False], "pii": [0], "last_role": ["assistant"],
                             "content_sha256": ["a"], "split": ["train"]})
    totals = {"records_read": 20, "train_examples": 20, "validation_examples": 1, "rejected": 0,
              "rejected_share": 0.0, "duplicates_removed": 0}
    parameters = {"max_tokens": 1000, "min_train_examples": 1, "max_rejected_share": 0.5,
                  "min_validation_examples": 0, **asdict(options)}
    return run_suites(features, totals, parameters, figures={"preference": figures.to_row()}).failed


def test_preference_suite_fails_on_each_crafted_figure():
    options = PreferenceGates(min_pairs=10, max_length_bias=0.8, max_near_identical_share=0.2)
    assert suite_verdict(PreferenceFigures(pairs=20, near_identical=2, preferred_longer=12), options) == []
    failed = suite_verdict(PreferenceFigures(pairs=5, near_identical=0, preferred_longer=2), options)
    assert failed == ["preference.pairs: 5, expected >= 10"]
    failed = suite_verdict(PreferenceFigures(pairs=20, near_identical=5, preferred_longer=10), options)
    assert [f.split(":")[0] for f in failed] == ["preference.near_identical_share"]
    failed = suite_verdict(PreferenceFigures(pairs=20, near_identical=0, preferred_longer=19), options)
    assert [f.split(":")[0] for f in failed] == ["preference.length_bias"]


def test_figures_count_training_pairs_only():
    features = pd.DataFrame({"split": ["train", "train", "validation"], "near_identical": [True, False, True],
                             "preferred_longer": [True, True, False]})
    assert figures_of(features).to_row() == {"pairs": 2, "near_identical_share": 0.5, "length_bias": 1.0}


def test_rated_csv_rows_that_cannot_be_read_are_rejected_alone_and_a_cut_gz_keeps_what_came_before(tmp_path):
    header = b"conversation_id,prompt,answer,rating\r\n"
    good = [b"c1,Wo ist mein Rad?,Es ist unterwegs.,5\r\n", b"c1,Wo ist mein Rad?,Keine Ahnung.,1\r\n"]
    path = tmp_path / "rated.csv"
    path.write_bytes(header + good[0] + b"c2,Frage?,Antwort \xff kaputt,4\r\n" + b"c3,zu,viele,Felder,4\r\n" + good[1])
    (rated,), _ = run([str(path)], tmp_path / "plain", settings())
    assert rated.records_read == 3 and rated.kept == 1  # c1's pair; the two broken rows alone
    assert rated.rejected["extract"] == {"invalid_utf8": 1, "ragged_row": 1}

    import gzip

    whole = gzip.compress(header + good[0] + good[1] * 2000)
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    (result,), _ = run([str(cut)], tmp_path / "cut", settings())
    assert result.rejected["extract"] == {"truncated_file": 1}
    assert result.records_read == result.kept + result.rejected_total  # every row read is accounted for
