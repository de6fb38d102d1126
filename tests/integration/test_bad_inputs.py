"""Every kind of bad input in tests/data/bad_inputs/, through `ftflow prepare` as a user runs it.

Per kind: the exit code; for an error exit exactly one `error: ...` line on stderr; the
accounting invariant; every good record written; every bad one in rejected.jsonl with the
expected reason.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ftflow.cli import app
from ftflow.jsonl import file_sha256
from ftflow.outputs import MANIFEST, Manifest
from tests.conftest import ROOT, chat, postgres_engine_or_skip, postgres_url, write_jsonl
from tests.data.bad_inputs.generate import build, make_special, sql_rows

CORPUS = ROOT / "tests" / "data" / "bad_inputs"
CASES = json.loads((CORPUS / "cases.json").read_text("utf-8"))


def params() -> list:
    marks = {"postgres": pytest.mark.postgres}
    return [pytest.param(case, id=case["kind"], marks=[marks[m] for m in case["marks"]]) for case in CASES]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """A fresh copy from the generator, which must match the committed manifest."""
    root = tmp_path_factory.mktemp("bad_inputs")
    assert build(root) == CASES, "tests/data/bad_inputs is stale: run tests/data/bad_inputs/generate.py"
    for case in CASES:
        make_special(root / case["kind"], case)
    return root


def test_the_corpus_is_wide_and_committed_as_generated(corpus):
    formats = {case["kind"].split("_")[0] for case in CASES}
    assert len(CASES) >= 40 and {"jsonl", "json", "transcript", "gz", "csv", "parquet", "sqlite", "postgres"} <= formats
    for case in CASES:
        folder = CORPUS / case["kind"]
        for path in folder.iterdir() if folder.exists() else []:
            if path.suffix != ".parquet":  # Parquet files name the pyarrow version that wrote them
                assert path.read_bytes() == (corpus / case["kind"] / path.name).read_bytes(), path


def good_tags(path: Path) -> list[str]:
    """The tag of every written example (or preference pair's input), from its user turn (`Frage <tag>`)."""
    tags = []
    for line in path.read_text("utf-8").splitlines():
        record = json.loads(line)
        user = next(m for m in (record.get("input") or record)["messages"] if m["role"] == "user")
        content = user["content"]
        text = content if isinstance(content, str) else "".join(part["text"] for part in content)
        tags.append(text.removeprefix("Frage "))
    return tags


@pytest.mark.flow
@pytest.mark.parametrize("case", params())
def test_bad_input_through_the_cli(case, corpus, prefect_server, tmp_path, request):
    folder = corpus / case["kind"]
    table = _postgres_table(case, request) if case["special"] == "postgres" else ""
    fill = {"dir": str(folder), "postgres_url": postgres_url(), "table": table}
    out = tmp_path / "out"
    args = [
        "prepare",
        *(s.format(**fill) for s in case["sources"]),
        "--out", str(out), "--validation-fraction", "0",
        *(a.format(**fill) for a in case["args"]),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == case["exit"], (result.output, result.stderr, result.exception)

    if case["exit"] in (2, 3, 4):
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error: ") and case["message"] in lines[0], lines[0]
    if case["exit"] == 2:
        assert not (out / "train.jsonl").exists()
        return

    report = json.loads((out / "report.json").read_text("utf-8"))
    written = report["examples_written"]
    assert report["records_read"] == (
        written["train"] + written["validation"] + sum(report["rejected"].values()) + report["duplicates_removed"]
    )
    assert report["rejected"] == case["rejected"]
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text("utf-8").splitlines()]
    assert Counter(r["reason"] for r in rejected) == Counter(case["rejected"])
    assert all(r["source"] and r["loc"] and r["detail"] for r in rejected), rejected
    assert report["sources_skipped"] == case["skipped"]
    assert sum(": skipped, " in line for line in result.stderr.splitlines()) == case["skipped"], result.stderr
    if case["exit"] == 0:
        assert sorted(good_tags(out / "train.jsonl") + good_tags(out / "validation.jsonl")) == sorted(case["good"])
        written_text = (out / "train.jsonl").read_text("utf-8") + (out / "validation.jsonl").read_text("utf-8")
        for number in case["verbatim"]:  # e.g. integers beyond 64 bits, exactly as the input wrote them
            assert number in written_text, number[:40]


def _postgres_table(case, request) -> str:
    """A uniquely named table on the shared PostgreSQL holding the case's rows, dropped afterwards."""
    import sqlalchemy as sa

    engine = postgres_engine_or_skip()
    table = f"ftflow_bad_{uuid.uuid4().hex[:10]}"
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {table} (conversation_id TEXT, turn INTEGER, role TEXT, content TEXT)"))
        conn.execute(
            sa.text(f"INSERT INTO {table} VALUES (:c, :t, :r, :x)"),
            [dict(zip("ctrx", row, strict=True)) for row in sql_rows(case)],
        )

    def drop() -> None:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE {table}"))
        engine.dispose()

    request.addfinalizer(drop)
    return table


@pytest.mark.flow
def test_an_unwritable_work_dir_is_one_error_line_and_nothing_published(corpus, prefect_server, tmp_path, monkeypatch):
    monkeypatch.setenv("FTFLOW_WORK_DIR", "/sys/ftflow-work")  # read-only, for root too
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["prepare", str(corpus / "jsonl_bom" / "data.jsonl"), "--out", str(out)])
    assert result.exit_code == 2, (result.output, result.stderr, result.exception)
    assert result.stderr.splitlines() == [result.stderr.strip()] and result.stderr.startswith("error: ")
    assert "/sys/ftflow-work" in result.stderr and not out.exists()


@pytest.mark.flow
@pytest.mark.parametrize("full", ["--out", "work_dir"])
def test_a_full_disk_is_one_error_line_naming_it_and_nothing_half_published(full, prefect_server, tmp_path):
    """`ftflow prepare` as a process, with --out or work_dir on a real 256 KiB tmpfs (a mount namespace of
    its own): one line saying what and where, exit 2, and in --out only complete files, recorded as such."""
    from prefect.settings import get_current_settings

    source = write_jsonl(tmp_path / "chats.jsonl", [chat(f"Frage {i}: " + "wo ist mein Paket? " * 20, f"Antwort {i}")
                                                    for i in range(2000)])  # about 1 MiB: more than the disk holds
    disk = tmp_path / "disk"
    disk.mkdir()
    out, work = (disk / "out", tmp_path / "work") if full == "--out" else (tmp_path / "out", disk / "work")
    after = tmp_path / "out-after"  # what --out held when the command ended, copied out of the namespace
    command = shlex.join([sys.executable, "-m", "ftflow.cli", "prepare", str(source), "--out", str(out)])
    script = (f"mount -t tmpfs -o size=256k tmpfs {shlex.quote(str(disk))} || exit 99; "
              f"{command}; code=$?; if [ -d {shlex.quote(str(out))} ]; then cp -a {shlex.quote(str(out))} "
              f"{shlex.quote(str(after))}; fi; exit $code")
    env = {**os.environ, "PREFECT_API_URL": str(get_current_settings().api.url), "FTFLOW_WORK_DIR": str(work)}
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=600)

    assert done.returncode == 2, (done.stdout[-2000:], done.stderr)
    [line] = done.stderr.splitlines()
    assert line.startswith("error: ") and "No space left on device" in line, line
    assert str(out if full == "--out" else work) in line, line
    if not after.exists():
        return
    assert not {"train.jsonl", "validation.jsonl"} & {path.name for path in after.rglob("*")}
    manifest = Manifest(after).load()
    files = {str(path.relative_to(after)) for path in after.rglob("*") if path.is_file() and path.name != MANIFEST}
    assert files == set(manifest), (files, manifest)  # every file left is one ftflow recorded, complete
    assert all(digest == file_sha256(after / name) for name, digest in manifest.items()), manifest
