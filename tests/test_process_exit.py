"""ftflow's processes exit without the interpreter's final garbage collections (ftflow/process_exit.py)."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

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
    "a shard worker": "from tasks.shards import start_shard_worker\nstart_shard_worker()\n" + CYCLE,
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


def test_the_console_script_is_the_entry_that_skips_them():
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "ftflow"]
    assert script.value == "ftflow.cli:main"
