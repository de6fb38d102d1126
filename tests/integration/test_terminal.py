"""One line per error: Prefect's report of a failed run stays off the terminal for our errors."""

from __future__ import annotations

import logging

import pytest
from typer.testing import CliRunner

from ftflow.cli import app
from ftflow.errors import ConfigError
from ftflow.terminal import one_line_errors


@pytest.fixture
def run_logger():
    from prefect.logging.handlers import PrefectConsoleHandler

    logger = logging.getLogger("prefect.flow_runs.terminal_test")
    handler = PrefectConsoleHandler()
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    yield logger
    logger.removeHandler(handler)


def fail_with(logger: logging.Logger, exc: Exception) -> None:
    try:
        raise exc
    except Exception:
        logger.error("Encountered exception during execution", exc_info=True)
    raise exc


def test_progress_goes_to_stdout_and_our_errors_tracebacks_nowhere(capsys, run_logger):
    with pytest.raises(ConfigError), one_line_errors():
        run_logger.info("Beginning flow run")
        run_logger.warning("a.jsonl: skipped, a FIFO")
        fail_with(run_logger, ConfigError("bad"))
    out, err = capsys.readouterr()
    assert "Beginning flow run" in out and "Traceback" not in out + err
    assert err.count("\n") == 1 and "skipped, a FIFO" in err


def test_a_bug_still_shows_its_traceback(capsys, run_logger):
    with pytest.raises(KeyError), one_line_errors():
        fail_with(run_logger, KeyError("bug"))
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--validation-fraction", "1.5"], "error: validation_fraction (from --validation-fraction): Input should be less than 1"),
        (["--pii", "maybe"], "error: pii (from --pii): Input should be 'off', 'report' or 'mask' (got 'maybe')"),
        (["--sql-url", "not a url", "--query", "SELECT 1"], "error: --sql-url is not a database URL"),
        (["--sql-url", "foodb://u:secret@h/db", "--query", "SELECT 1"], "error: --sql-url foodb://u:***@h/db: unknown"),
        (["--format", "xml"], "error: format (from --format): Input should be 'auto'"),
    ],
)
def test_option_errors_are_one_line_naming_the_option(args, message, tmp_path):
    result = CliRunner().invoke(app, ["prepare", str(tmp_path / "*.jsonl"), "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [result.stderr.strip()] and result.stderr.startswith(message), result.stderr
    assert "secret" not in result.output


def test_an_existing_file_as_out_is_named(tmp_path):
    (tmp_path / "taken").write_text("x")
    result = CliRunner().invoke(app, ["prepare", str(tmp_path / "*.jsonl"), "--out", str(tmp_path / "taken")])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: out_dir (from --out): {tmp_path / 'taken'} is an existing file, not a folder"


@pytest.mark.flow
def test_worker_processes_log_to_the_run_and_the_terminal_shows_one_line(fork_server, tmp_path):
    """Shards in worker processes (FTFLOW_SHARD_MB=1) and a CSV without the needed columns: the
    run said its `error:` line, and its workers printed 43 more lines, tracebacks included."""
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT

    with open(tmp_path / "big.jsonl", "w") as f:
        for i in range(9000):
            f.write(json.dumps({"messages": [{"role": "user", "content": f"Frage {i} " + "x" * 200},
                                             {"role": "assistant", "content": f"Antwort {i}"}]}) + "\n")
    (tmp_path / "m.csv").write_text("id,text\n1,x\n")
    env = {**fork_server.env, "FTFLOW_SHARD_MB": "1", "FTFLOW_WORKERS": "2", "FTFLOW_WORK_DIR": str(tmp_path / "work")}
    process = fork_server.popen([sys.executable, "-m", "ftflow.cli", "prepare", str(tmp_path / "big.jsonl"),
                                 str(tmp_path / "m.csv"), "--out", str(tmp_path / "out")],
                                env=env, cwd=ROOT, stderr=subprocess.PIPE)
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 2, stderr
    assert stderr.splitlines() == [f"error: shard 0003-m.csv ({tmp_path / 'm.csv'}) failed: {tmp_path / 'm.csv'}: "
                                   "missing column(s) ['conversation_id', 'turn', 'role', 'content']; "
                                   "have ['id', 'text']"]
    assert "prepared: " not in stdout  # the workers' shard logs went to the run, not to stdout either
