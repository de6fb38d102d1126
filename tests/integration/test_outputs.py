"""ftflow removes and overwrites only what it wrote (ftflow/outputs.py), and never reads a source
from a folder it writes to."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from ftflow.cli import app
from ftflow.errors import ConfigError
from ftflow.jsonl import file_sha256
from ftflow.outputs import MANIFEST, Manifest, refuse_foreign, refuse_sources_inside, writing
from tests.conftest import chat, write_jsonl


def test_clearing_removes_only_recorded_files_whose_bytes_are_unchanged(tmp_path):
    with writing(tmp_path, ["a.jsonl", "b.jsonl", "c.jsonl"]):
        for name in ("a.jsonl", "b.jsonl", "c.jsonl"):
            (tmp_path / name).write_text(name)
    (tmp_path / "b.jsonl").write_text("edited by hand")
    (tmp_path / "mine.jsonl").write_text("never written by ftflow")
    assert Manifest(tmp_path).clear() == ["b.jsonl"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.jsonl", "mine.jsonl"]  # no manifest of nothing


def test_a_file_claimed_but_not_finished_is_ftflows_own(tmp_path):
    """A run killed while writing leaves a claim: the next run may clear the half-written file."""
    Manifest(tmp_path).claim(["report.json"])
    (tmp_path / "report.json").write_text('{"half')
    refuse_foreign(tmp_path, ["report.json"], "--out")  # no error
    assert Manifest(tmp_path).clear() == [] and not (tmp_path / "report.json").exists()


def test_an_output_name_held_by_a_file_ftflow_did_not_write_stops_the_run(tmp_path):
    (tmp_path / "report.json").write_text("the user's")
    with pytest.raises(ConfigError, match=r"report.json was not written by ftflow, or changed since"):
        refuse_foreign(tmp_path, ["train.jsonl", "report.json"], "--out")


def test_sources_inside_a_folder_ftflow_writes_to_are_refused_by_path_glob_or_link(tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir(), elsewhere.mkdir()
    (out / "a.jsonl").write_text("{}")
    (elsewhere / "link.jsonl").symlink_to(out / "a.jsonl")
    (elsewhere / "b.jsonl").write_text("{}")
    folders = {"--out": out, "work_dir": tmp_path / "work"}
    for source in (out / "a.jsonl", tmp_path / "o*" / "*.jsonl", elsewhere / "link.jsonl"):
        with pytest.raises(ConfigError, match=rf"source .* is inside --out {out}"):
            refuse_sources_inside([str(elsewhere / "b.jsonl"), str(source)], folders)
    refuse_sources_inside([str(elsewhere / "b.jsonl"), str(tmp_path / "nothing*.jsonl")], folders)


# --- through the CLI, as in the issue -----------------------------------------------------------


def good_records(n: int = 12) -> list[dict]:
    return [chat(f"Frage {i}", f"Antwort {i}") for i in range(n)]


def prepare(*args: str):
    return CliRunner().invoke(app, ["prepare", *args, "--validation-fraction", "0"])


@pytest.mark.flow
@pytest.mark.parametrize("name", ["train.jsonl", "report.json", "rejected.jsonl", "features.parquet"])
def test_a_source_inside_out_is_refused_before_anything_is_touched(name, prefect_server, tmp_path, monkeypatch):
    """`ftflow prepare data/train.jsonl --out data` deleted data/train.jsonl, then said it was missing."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    source = write_jsonl(tmp_path / "data" / name, good_records())
    before = source.read_bytes()
    result = prepare(f"data/{name}", "--out", "data")
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [f"error: source data/{name} is inside --out data, where ftflow writes: "
                                          "move the source out or choose another --out"]
    assert source.read_bytes() == before and sorted(p.name for p in (tmp_path / "data").iterdir()) == [name]


@pytest.mark.flow
def test_a_source_inside_the_work_dir_is_refused(prefect_server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".ftflow" / "work").mkdir(parents=True)
    source = write_jsonl(tmp_path / ".ftflow" / "work" / "data.jsonl", good_records())
    result = prepare(".ftflow/work/*.jsonl", "--out", "out")
    assert result.exit_code == 2 and "is inside work_dir .ftflow/work" in result.stderr, result.output
    assert source.exists() and not (tmp_path / "out").exists()


@pytest.mark.flow
def test_user_files_in_out_are_left_alone_and_ftflows_own_are_replaced(prefect_server, tmp_path):
    source = write_jsonl(tmp_path / "chat.jsonl", [*good_records(), "{broken"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "old.jsonl").write_text("mine too")
    first = prepare(str(source), "--out", str(out))
    assert first.exit_code == 0, first.output
    ours = set(Manifest(out).load())
    assert ours == {"train.jsonl", "validation.jsonl", "rejected.jsonl", "duplicates.jsonl", "quality.json",
                    "features.parquet", "report.json"}
    second = prepare(str(source), "--out", str(out))  # clears the first run's outputs: all its own
    assert second.exit_code == 0, second.output
    assert (out / "notes.txt").read_text() == "mine" and (out / "old.jsonl").read_text() == "mine too"
    assert json.loads((out / "report.json").read_text())["records_read"] == 13

    (out / "train.jsonl").write_text((out / "train.jsonl").read_text() + "edited\n")
    edited = (out / "train.jsonl").read_bytes()
    third = prepare(str(source), "--out", str(out))
    assert third.exit_code == 2
    assert third.stderr.splitlines() == [f"error: --out {out}: {out / 'train.jsonl'} was not written by ftflow, or "
                                         "changed since; ftflow will not overwrite it: move it away or choose "
                                         "another --out"]
    assert (out / "train.jsonl").read_bytes() == edited and (out / "report.json").exists()
    shutil.move(out / "train.jsonl", tmp_path / "kept.jsonl")
    assert prepare(str(source), "--out", str(out)).exit_code == 0


@pytest.mark.flow
@pytest.mark.parametrize("folder", ["runs", ".ftflow/service"])
def test_retrain_refuses_a_source_in_the_runs_folder_or_the_service_data_dir(folder, prefect_server, tmp_path,
                                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / folder / "old").mkdir(parents=True)
    source = write_jsonl(tmp_path / folder / "old" / "train.jsonl", good_records())
    result = CliRunner().invoke(app, ["retrain", f"{folder}/old/train.jsonl", "--runs-dir", "runs"])
    assert result.exit_code == 2, result.output
    option = {"runs": "runs_dir runs", ".ftflow/service": "service_data_dir .ftflow/service"}[folder]
    assert result.stderr.splitlines() == [f"error: source {folder}/old/train.jsonl is inside {option}, where ftflow "
                                          f"writes: move the source out or choose another {option.split()[0]}"]
    runs = tmp_path / "runs"
    assert source.exists() and sorted(p.name for p in runs.iterdir()) == (["old"] if folder == "runs" else [])


def test_a_manifest_never_reaches_outside_its_folder(tmp_path):
    outside = tmp_path / "precious.txt"
    outside.write_text("keep")
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST).write_text(json.dumps({"../precious.txt": file_sha256(outside), str(outside): None}))
    Manifest(out).clear()
    assert outside.read_text() == "keep"
