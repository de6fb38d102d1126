"""The tests' fork server (tests/forkserver.py): its children behave as the `python` processes they
stand in for (exit status, signals, environment, directory, arguments, output), with the imports done."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.integration.chaos.conftest import KILLPOINT

pytestmark = pytest.mark.flow


def child_env(fork_server, **variables: str) -> dict[str, str]:
    return {**fork_server.env, **variables}


def test_a_child_gets_its_environment_directory_arguments_and_output_and_exits_with_its_code(fork_server, tmp_path):
    code = ("import os, sys, threading\n"
            "print(os.environ['FTFLOW_PROBE'], os.getcwd(), sys.argv, sys.path[0] == '')\n"
            "print(sorted(m for m in ('great_expectations', 'flows.retrain') if m in sys.modules), threading.active_count())\n"
            "print('to stderr', file=sys.stderr)\n"
            "sys.exit(3)\n")
    process = fork_server.popen([sys.executable, "-c", code, "one", "two"], env=child_env(fork_server, FTFLOW_PROBE="set"),
                                cwd=tmp_path, stderr=subprocess.PIPE)
    out, err = process.communicate(timeout=60)
    assert (process.returncode, err) == (3, "to stderr\n")
    assert out.splitlines() == [f"set {tmp_path} ['-c', 'one', 'two'] True",
                                "['flows.retrain', 'great_expectations'] 1"]  # imported, and no thread but its own
    assert process.pid != fork_server.pid


def test_a_script_and_a_module_run_as_main_with_stderr_into_stdout(fork_server):
    for args in ([str(KILLPOINT), "--version"], ["-m", "ftflow.cli", "--version"]):
        process = fork_server.popen([sys.executable, *args], env=fork_server.env, cwd=ROOT)
        out, err = process.communicate(timeout=60)
        assert (process.returncode, err) == (0, None)
        assert out.startswith("ftflow "), out


def test_sigkill_gives_minus_nine_and_what_was_read_before_a_timeout_is_kept(fork_server):
    code = "import sys, time; print('started', flush=True); time.sleep(60)"
    process = fork_server.popen([sys.executable, "-c", code], env=fork_server.env, cwd=ROOT)
    with pytest.raises(subprocess.TimeoutExpired):
        process.wait(timeout=0.2)
    with pytest.raises(subprocess.TimeoutExpired):
        process.communicate(timeout=2)
    assert process.poll() is None
    process.kill()
    assert process.communicate(timeout=30) == ("started\n", None)
    assert process.returncode == -9
    with pytest.raises(ProcessLookupError):
        os.kill(process.pid, 0)  # reaped by the server: nothing of it is left


def test_children_draw_their_own_random_numbers(fork_server):
    draws = []
    for _ in range(2):
        process = fork_server.popen([sys.executable, "-c", "import random; print(random.random())"],
                                    env=fork_server.env, cwd=ROOT)
        draws.append(process.communicate(timeout=60)[0])
    assert draws[0] != draws[1]


def test_an_environment_that_differs_beyond_ftflow_variables_is_refused(fork_server):
    with pytest.raises(ValueError, match="PREFECT_API_URL"):
        fork_server.popen([sys.executable, "-c", "pass"], cwd=ROOT,
                          env=child_env(fork_server, PREFECT_API_URL="http://127.0.0.1:1/api"))
