"""ftflow's processes exit without the interpreter's final garbage collections (ftflow/process_exit.py)."""

from __future__ import annotations

import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# A reference cycle whose finalizer reports itself: only a garbage collection can free it, and
# with automatic collection off, only the interpreter's final collections at exit (they run
# whether or not it is on).
CYCLE = """
import gc, os
gc.disable()
class Node:
    def __del__(self):
        os.write(1, b"final collection ran\\n")
node = Node(); node.cycle = node; del node
"""

ENTRIES = {
    "the ftflow command": "import sys\nfrom ftflow.cli import main\n" + CYCLE + "sys.argv = ['ftflow', '--version']\nmain()",
    "a shard worker": "from tasks.shards.runner import start_shard_worker\nstart_shard_worker()\n" + CYCLE,
}


@pytest.mark.parametrize("entry", ENTRIES)
def test_the_process_exits_without_the_final_collections(entry):
    done = subprocess.run([sys.executable, "-c", ENTRIES[entry]], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "final collection ran" not in done.stdout


def test_the_cycle_reports_when_the_final_collections_run():
    """The check above can fail: without the exit hook the same cycle reports at exit."""
    done = subprocess.run([sys.executable, "-c", CYCLE], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout == "final collection ran\n"


# The command as the console script runs it, with what its exit must still do: a library's exit
# hook, and logging's (which closes every handler); `os._exit` reports the status it ends with.
ENDING = """
import sys
from ftflow.cli import main
import atexit, logging, os
class Closing(logging.Handler):
    def close(self, write=os.write):
        write(1, b"log handler closed\\n")
        super().close()
logging.getLogger("probe").addHandler(Closing())
atexit.register(os.write, 1, b"exit hook ran\\n")
real_exit = os._exit
def ending(status, write=os.write):
    write(1, f"ended with {status}\\n".encode())
    real_exit(status)
os._exit = ending
"""


@pytest.mark.parametrize(("argv", "status", "stderr"), [
    (["ftflow", "--version"], 0, ""),
    (["ftflow", "no-such-command"], 2, "No such command"),
])
def test_the_command_ends_after_its_exit_hooks_without_the_teardown(argv, status, stderr):
    script = ENDING + f"sys.argv = {argv!r}\nmain()"
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == status, done.stderr
    assert stderr in done.stderr
    assert done.stdout.endswith(f"exit hook ran\nlog handler closed\nended with {status}\n")


@pytest.mark.parametrize(("code", "status"), [(None, 0), (0, 0), (3, 3), (True, 1), ("error: message", 1)])
def test_the_status_is_the_one_python_exits_with(code, status):
    from ftflow.process_exit import exit_status

    assert exit_status(code) == status
    done = subprocess.run([sys.executable, "-c", f"raise SystemExit({code!r})"], capture_output=True, timeout=60)
    assert done.returncode == status


def test_the_console_script_is_the_entry_that_skips_them():
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "ftflow"]
    assert script.value == "ftflow.cli:main"


def test_sigterm_stops_the_command_as_ctrl_c_does_and_waits_for_a_step_that_must_not_stop_halfway():
    import os
    import signal

    from ftflow.process_exit import Stopped, signals_deferred, stopped_by_signals

    steps = []
    with stopped_by_signals() as received, pytest.raises(Stopped) as stopped:
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            steps.append("moved train")
            steps.append("moved validation")
        steps.append("after publishing")
    assert steps == ["moved train", "moved validation"] and isinstance(stopped.value, KeyboardInterrupt)
    assert stopped.value.signum == signal.SIGTERM and received[-1] == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is the command's only
    with signals_deferred():  # later, in the same process (a test run): nothing is raised again
        steps.append("published again")


def test_a_signal_that_lands_where_python_ignores_exceptions_still_stops_the_command():
    """SIGINT at start-up once landed in an import lock's weakref callback: "Exception ignored in",
    and the command went on as if never stopped (tests/integration/chaos/test_signals.py, under load)."""
    import gc
    import signal
    import time
    import weakref

    from ftflow.process_exit import Stopped, stopped_by_signals

    class Thing:
        pass

    def callback(_ref) -> None:  # Python prints and drops what a weakref callback raises
        signal.raise_signal(signal.SIGINT)
        sum(range(1000))  # the handler runs here, inside the callback

    steps = []
    with stopped_by_signals() as received, pytest.raises(Stopped):
        thing = Thing()
        ref = weakref.ref(thing, callback)
        del thing
        gc.collect()
        steps.append("went on after the signal")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the command's work after the callback
            time.sleep(0.01)
        steps.append("went on for 10 s")
    assert ref() is None and received[0] == signal.SIGINT
    assert "went on for 10 s" not in steps
    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_child_started_with_die_with_parent_ends_when_its_parent_is_sigkilled(tmp_path):
    parent = (
        "import os, signal, subprocess, sys\n"
        "from ftflow.process_exit import die_with_parent\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], preexec_fn=die_with_parent)\n"
        "print(child.pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", parent], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == -9, done.stderr
    child = Path(f"/proc/{int(done.stdout)}/stat")
    for _ in range(50):
        if not child.exists() or child.read_text().rsplit(")", 1)[1].split()[0] == "Z":
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the child outlived its SIGKILLed parent")
