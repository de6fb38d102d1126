"""The quality suites' own process (ftflow/suites_process.py), as `prepare` and `retrain` start it,
and the suites in threads of one process."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys

import pytest

from ftflow import suites_process
from ftflow.errors import ConfigError
from tasks.features import DriftOptions
from tasks.suites import run_suites_on_file
from tests.conftest import ROOT
from tests.unit.test_quality import PARAMS, TOTALS, features


def refuse(message: str) -> None:
    raise ConfigError(message)


def statistics_loaded() -> bool:
    """Whether SciPy's statistics ran their code in this process (a lazy module has not)."""
    return "scipy.stats._stats_py" in sys.modules


def charts_loaded() -> bool:
    """Whether Altair ran its code in this process (its lazy module has not: no submodule imported)."""
    return "altair.vegalite" in sys.modules


def features_file(tmp_path) -> str:
    """A features file as the reduce writes it, of a dataset the suites pass."""
    path = tmp_path / "features.parquet"
    features(20).assign(last_role="assistant").to_parquet(path)
    return str(path)


def test_the_suites_run_in_the_commands_suites_process_with_the_same_verdict(tmp_path):
    arguments = (features_file(tmp_path), {**TOTALS, "train_examples": 5}, PARAMS, DriftOptions(), None)
    here = run_suites_on_file(*arguments)
    assert here.failed == ["dataset.train_examples: 5, expected >= 10"]
    with suites_process.start_suites(own_process=True):
        assert suites_process.run(os.getpid) != os.getpid()
        there = suites_process.run(run_suites_on_file, *arguments)
        process = suites_process._current._process
        # Asked before `statistics_loaded`, whose module (this one) imports Prefect there.
        prefect_there = suites_process.run(eval, "'prefect' in __import__('sys').modules")
        statistics_there = suites_process.run(statistics_loaded)
        charts_there = suites_process.run(charts_loaded)
    assert (there.success, there.failed, there.features) == (here.success, here.failed, here.features)
    assert not statistics_there  # GX imports them for expectations the suites do not use: left lazy there
    assert not charts_there  # likewise Altair, for one expectation's chart
    assert not prefect_there  # the suites run without it (tasks/suites.py): its import there took almost half GX's
    assert process.exitcode == 0  # idle, it left on its own when the block ended
    assert suites_process.run(os.getpid) == os.getpid()  # no command around: in this process


def test_an_error_there_is_raised_here_with_its_class():
    with suites_process.start_suites(own_process=True), pytest.raises(ConfigError, match="no such suite"):
        suites_process.run(refuse, "no such suite")


def test_if_the_suites_process_is_gone_they_run_here_and_say_so(caplog):
    with suites_process.start_suites(own_process=True):
        process = suites_process._current._process
        process.kill()
        process.join(10)
        with caplog.at_level(logging.WARNING, logger="ftflow.suites_process"):
            assert suites_process.run(os.getpid) == os.getpid()
    assert "ended unexpectedly; running the suites in this process" in caplog.text


def test_beside_a_temporary_server_the_suites_are_imported_on_a_thread_and_run_here():
    with suites_process.start_suites(own_process=False):
        assert suites_process._current is None
        assert suites_process.run(os.getpid) == os.getpid()


def test_a_command_whose_suites_ran_there_exits_without_a_warning(tmp_path):
    """A command's process, which has not imported GX: beside a running server the suites run in a process of their own."""
    path = features_file(tmp_path)
    command = (
        "import os\n"
        "import ftflow.cli.pipeline, flows.prepare, flows.retrain\n"
        "from ftflow import suites_process\n"
        "from tasks.features import DriftOptions\n"
        "from tasks.suites import run_suites_on_file\n"
        "from tests.unit.test_quality import PARAMS, TOTALS\n"
        "assert not suites_process.imported()  # the commands' own imports leave GX to the suites' process\n"
        "with suites_process.start_suites_for(server_booting=False):\n"
        "    assert suites_process.run(os.getpid) != os.getpid()\n"
        f"    assert suites_process.run(run_suites_on_file, {path!r}, TOTALS, PARAMS, DriftOptions(), None).success\n"
        "    import logging, warnings\n"
        "    suites_process.run(logging.warning, 'a library warning logged there')  # no terminal there: dropped\n"
        "    suites_process.run(warnings.warn, 'a warning raised there')\n"
    )
    done = subprocess.run([sys.executable, "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr) == (0, "")  # e.g. no "leaked semaphore objects" from the stopped process


def test_a_command_that_ends_while_the_suites_still_import_stops_them():
    with suites_process.start_suites(own_process=True):
        process = suites_process._current._process
    # SIGTERM's own exit if it came before the process set its handler
    assert process.exitcode in (suites_process.STOPPED, -signal.SIGTERM)


def test_a_command_in_a_process_that_imported_gx_already_runs_the_suites_here():
    """A second command in one process (a program or test calling the app again): no import left to overlap."""
    import great_expectations  # noqa: F401

    assert suites_process.imported()
    for booting in (False, True):
        with suites_process.start_suites_for(server_booting=booting):
            assert suites_process._current is None
            assert suites_process.run(os.getpid) == os.getpid()


def test_flow_runs_in_threads_of_one_process_validate_at_the_same_time():
    """GX's suite-parameter parser breaks when two threads use it first at once; each fresh process races 8."""
    script = (
        "import threading\n"
        "from tests.unit.test_quality import features, TOTALS, PARAMS\n"
        "from tasks.suites import run_suites\n"
        "barrier, errors = threading.Barrier(8), []\n"
        "def validate():\n"
        "    barrier.wait()\n"
        "    try:\n"
        "        assert run_suites(features(20), TOTALS, PARAMS).success\n"
        "    except Exception as exc:\n"
        "        errors.append(repr(exc))\n"
        "threads = [threading.Thread(target=validate) for _ in range(8)]\n"
        "[t.start() for t in threads]; [t.join() for t in threads]\n"
        "print(errors)\n"
    )
    processes = [subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT) for _ in range(4)]
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [o.strip().splitlines()[-1] for o in outputs] == ["[]"] * 4, outputs
