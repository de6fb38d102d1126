"""Start-up of `ftflow prepare` on a small input against `python -c "import prefect"`, in one run.

    .venv/bin/python bench/startup.py [--repeats 5] [--lines 20] [--ftflow PATH ...]

Each repeat times, one after the other so that the machine's load falls on all alike:
- `python -c "import prefect"` (the interpreter of each ftflow given);
- cold, temporary: `ftflow prepare` with no server running and `prefect_server = "temporary"`:
  the command boots a Prefect server of its own and stops it at its end;
- cold, background: no server running and `prefect_server = "background"`: the command starts
  the background server (stopped again after the run, so the next repeat is cold too);
- warm: `prefect_server = "background"` with that server already running.
Every run prepares a file of its own (the same number of lines, different text), so no
stored shard, moderation answer or cached task result is reused, in a work dir of its own.
Prefect's database is created before the first repeat (once per PREFECT_HOME, not start-up).
Prints each median, its ratio to the median import of Prefect, the CPU time of the command and
the processes it waited for, and the machine's load average before and after (`uptime`).
Several `--ftflow` (e.g. a script running another checkout's ftflow) are measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODES = ("cold, temporary", "cold, background", "warm")


def write_input(path: Path, lines: int, tag: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(lines):
            f.write(json.dumps({"messages": [
                {"role": "system", "content": "Du bist der Kundenservice-Assistent von Alpenrad."},
                {"role": "user", "content": f"Frage {tag}-{i}: Wo ist meine Bestellung AR-{i}?"},
                {"role": "assistant", "content": f'{{"antwort": "Bestellung AR-{i} ({tag}) ist unterwegs"}}'},
            ]}, ensure_ascii=False) + "\n")


def timed(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float] | None:
    """Wall seconds, and CPU seconds of the command and the processes it waited for; None when the
    quality gate stopped it (exit code 3)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode == 3 and "quality gate failed" in done.stderr:
        return None
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return seconds, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


class Subject:
    """One ftflow installation, with a PREFECT_HOME and folders of its own."""

    def __init__(self, ftflow: Path, folder: Path, lines: int) -> None:
        self.ftflow = ftflow
        self.lines = lines
        self.python = ftflow.read_text("utf-8").splitlines()[0].removeprefix("#!")  # the interpreter it runs on
        self.folder = folder
        folder.mkdir(parents=True)
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FTFLOW_"))}
        self.env = {**environment, "PREFECT_HOME": str(folder / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300"}
        self.times: dict[str, list[tuple[float, float]]] = {"import prefect": [], **{mode: [] for mode in MODES}}
        self.runs = 0

    def import_prefect(self) -> None:
        measured = timed([str(self.python), "-c", "import prefect"], self.env, self.folder)
        assert measured is not None
        self.times["import prefect"].append(measured)

    def prepare(self, mode: str, record: bool = True) -> None:
        server = "temporary" if mode == "cold, temporary" else "background"
        while True:  # 20 lines split by their digests: 1 input in 8 has no validation example and fails the gate
            self.runs += 1
            source = self.folder / f"input-{self.runs}.jsonl"
            write_input(source, self.lines, f"{self.folder.name}-{self.runs}")
            env = {**self.env, "FTFLOW_PREFECT_SERVER": server,
                   "FTFLOW_WORK_DIR": str(self.folder / f"work-{self.runs}")}
            measured = timed([str(self.ftflow), "prepare", str(source), "--out", str(self.folder / f"out-{self.runs}")],
                             env, self.folder)
            if measured is not None:
                break
        if record:
            self.times[mode].append(measured)

    def stop_server(self) -> None:
        subprocess.run([str(self.ftflow), "server", "stop"], env=self.env, cwd=self.folder, capture_output=True)


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--lines", type=int, default=20)
    parser.add_argument("--ftflow", type=Path, action="append",
                        help="An ftflow executable to measure (repeatable; default: this venv's)")
    args = parser.parse_args()
    executables = args.ftflow or [Path(sys.executable).parent / "ftflow"]
    print(f"{os.cpu_count()} cores; before: {load()}")
    with tempfile.TemporaryDirectory(prefix="ftflow-startup-") as tmp:
        subjects = [Subject(path, Path(tmp) / f"subject-{i}", args.lines) for i, path in enumerate(executables)]
        try:
            for subject in subjects:  # Prefect's database, created once per PREFECT_HOME
                subject.prepare("cold, temporary", record=False)
            for repeat in range(args.repeats):
                for subject in subjects:
                    subject.import_prefect()
                    subject.prepare("cold, temporary")
                    subject.prepare("cold, background")  # starts the server the warm runs use
                    subject.prepare("warm")
                    subject.stop_server()
                print(f"repeat {repeat + 1}/{args.repeats} done; {load()}")
        finally:
            for subject in subjects:
                subject.stop_server()
        print(f"after: {load()}")
        for subject in subjects:
            base = statistics.median(seconds for seconds, _ in subject.times["import prefect"])
            print(f"\n{subject.ftflow} ({args.lines} lines, {args.repeats} repeats, median wall / median CPU)")
            for name, runs in subject.times.items():
                wall = statistics.median(seconds for seconds, _ in runs)
                cpu = statistics.median(cpu for _, cpu in runs)
                print(f"  {name:<18} {wall:6.2f} s  {wall / base:5.2f}x   CPU {cpu:6.2f} s   "
                      f"(wall {min(s for s, _ in runs):.2f}-{max(s for s, _ in runs):.2f} s)")


if __name__ == "__main__":
    main()
