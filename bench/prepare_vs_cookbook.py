"""`ftflow prepare` against the OpenAI cookbook's per-example loop, on the same synthetic input.

    .venv/bin/python bench/prepare_vs_cookbook.py N [--scaling-n M] [--skip-scaling] [--skip-incremental]

Generates N chat conversations (fixed seed; about 1 in 10 with PII, 2% duplicates, 0.5% bad
records), then in the same run times:
- cookbook: the data-preparation notebook's loop (parse each line, its format checks, tiktoken
  on every value), in one process;
- ftflow: `ftflow prepare` through the CLI, start-up included, default options, a fresh work
  dir; peak RSS of every process of the run (CLI, Prefect's temporary server, shard workers);
- warm start: `ftflow prepare` on 20 lines with a warm PREFECT_HOME, with Prefect's temporary
  server and with a running one (`prefect server start`, PREFECT_API_URL set), each against
  `python -c "import prefect"` (the median of three, right after);
- scaling: `--dask-address` on a dask.distributed LocalCluster of 2 single-threaded worker
  processes against one of 1 worker (same outputs);
- incremental: 1% more lines appended, the re-run (reusing unchanged shards) against the
  full run, with the temporary server and with a running one, and their dataset_sha256 against
  a from-scratch run on the grown input.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FTFLOW = Path(sys.executable).parent / "ftflow"
WORDS = ["Bestellung", "Lieferung", "Akku", "Rahmen", "Garantie", "Rechnung", "Termin", "Werkstatt", "bitte",
         "danke", "heute", "morgen", "Fahrrad", "Kette", "Bremse", "Schaltung", "Reifen", "Lenker", "Sattel",
         "Ersatzteil", "Rückgabe", "Umtausch", "Versand", "Paket", "Filiale"]
SYSTEM = "Du bist der Kundenservice-Assistent von Alpenrad. Antworte freundlich, kurz und auf Deutsch als JSON."


# --- input -------------------------------------------------------------------------------------------


def conversation(rng: random.Random, i: int) -> dict:
    def sentence(n: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(n))

    question = f"{sentence(rng.randint(25, 60))} Bestellung AR-{i}?"
    if rng.random() < 0.1:
        question += rng.choice([f" Meine Mail ist kunde{i}@example.de.", f" Ruf mich an: +49 30 {1000000 + i}.",
                                " IBAN DE89 3704 0044 0532 0130 00"])
    answer = json.dumps({"antwort": sentence(rng.randint(30, 80)), "bestellung": f"AR-{i}"}, ensure_ascii=False)
    turns = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question},
             {"role": "assistant", "content": answer}]
    if rng.random() < 0.3:
        turns += [{"role": "user", "content": sentence(15)}, {"role": "assistant", "content": sentence(25)}]
    return {"messages": turns}


def write_input(path: Path, n: int, seed: int = 7, mode: str = "w", start: int = 0) -> None:
    rng = random.Random(seed + start)
    recent: list[str] = []
    with open(path, mode, encoding="utf-8") as f:
        for i in range(start, start + n):
            roll = rng.random()
            if roll < 0.005:
                line = rng.choice(['{"messages": [', '{"messages": [{"role": "user", "content": "nur Frage"}]}',
                                   '{"messages": [{"role": "narrator", "content": "x"}]}'])
            elif roll < 0.025 and recent:
                line = rng.choice(recent)
            else:
                line = json.dumps(conversation(rng, i), ensure_ascii=False)
                recent = [*recent[-99:], line]
            f.write(line + "\n")


# --- the cookbook's loop -------------------------------------------------------------------------------


def cookbook(path: Path) -> dict:
    """The notebook's format checks and token counts (num_tokens_from_messages), per example."""
    from ftflow.encodings import get_encoding

    encoding = get_encoding("cl100k_base")
    errors: dict[str, int] = {}
    tokens = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                ex = json.loads(line)
            except ValueError:
                errors["invalid_json"] = errors.get("invalid_json", 0) + 1
                continue
            if not isinstance(ex, dict):
                errors["data_type"] = errors.get("data_type", 0) + 1
                continue
            messages = ex.get("messages", None)
            if not messages:
                errors["missing_messages_list"] = errors.get("missing_messages_list", 0) + 1
                continue
            for message in messages:
                if "role" not in message or "content" not in message:
                    errors["message_missing_key"] = errors.get("message_missing_key", 0) + 1
                if any(k not in ("role", "content", "name", "function_call", "weight") for k in message):
                    errors["message_unrecognized_key"] = errors.get("message_unrecognized_key", 0) + 1
                if message.get("role", None) not in ("system", "user", "assistant", "function"):
                    errors["unrecognized_role"] = errors.get("unrecognized_role", 0) + 1
                content = message.get("content", None)
                function_call = message.get("function_call", None)
                if (not content and not function_call) or not isinstance(content, str):
                    errors["missing_content"] = errors.get("missing_content", 0) + 1
            if not any(message.get("role", None) == "assistant" for message in messages):
                errors["example_missing_assistant_message"] = errors.get("example_missing_assistant_message", 0) + 1
            num = 0
            for message in messages:
                num += 3
                for key, value in message.items():
                    num += len(encoding.encode(value)) if isinstance(value, str) else 0
                    if key == "name":
                        num += 1
            tokens += num + 3
    return {"tokens": tokens, "errors": errors}


# --- measuring processes -------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    """Children of every thread of pid (a process pool is started from a helper thread)."""
    found: list[int] = []
    try:
        for thread in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{thread}/children") as f:
                found += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return found


def _peak_kib(pid: int) -> tuple[str, int] | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return cmdline, int(fields.get("VmHWM", "0 kB").split()[0])


def timed(command: list[str], env: dict[str, str] | None = None) -> dict:
    """Run a command; wall time and the peak RSS of it and every descendant (sampled from /proc)."""
    peaks: dict[int, tuple[str, int]] = {}
    started = time.perf_counter()
    # The Makefile's start-up allowance for Prefect's temporary server, also when run directly.
    base = {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120", **os.environ}
    process = subprocess.Popen(command, cwd=ROOT, env={**base, **(env or {})}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)
    reader.start()
    # The end is taken by a thread waiting on the process, not by the sampling loop, whose 0.2 s
    # steps would add up to 0.2 s to every figure (a sixth of Prefect's import).
    ended: list[float] = []
    waiter = threading.Thread(target=lambda: (process.wait(), ended.append(time.perf_counter())), daemon=True)
    waiter.start()
    while waiter.is_alive():
        stack = [process.pid]
        while stack:
            pid = stack.pop()
            seen = _peak_kib(pid)
            if seen is not None and seen[1] >= peaks.get(pid, ("", 0))[1]:  # a zombie reports no VmHWM
                peaks[pid] = seen
            stack += _children(pid)
        waiter.join(0.2)
    seconds = ended[0] - started
    reader.join()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{''.join(output)[-3000:]}")
    return {"seconds": seconds, "peaks": sorted(peaks.values(), key=lambda p: -p[1]), "output": "".join(output)}


def prepare(source: Path, out: Path, work: Path, *extra: str, env: dict[str, str] | None = None) -> dict:
    result = timed([str(FTFLOW), "prepare", str(source), "--out", str(out), *extra],
                   env={"FTFLOW_WORK_DIR": str(work), **(env or {})})
    result["report"] = json.loads((out / "report.json").read_text())
    return result


@contextmanager
def running_prefect_server() -> Iterator[str]:
    """`prefect server start` on a free port, as the CLI's hint suggests; yields its API URL."""
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([str(FTFLOW.parent / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                               str(port)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api_url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{api_url}/health", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("prefect server start did not come up") from None
                time.sleep(0.5)
        yield api_url
    finally:
        server.terminate()
        server.wait(timeout=60)


def describe(name: str, run: dict) -> str:
    report = run.get("report", {})
    sha = report.get("dataset_sha256", "")[:12]
    return f"{name:<34} {run['seconds']:8.1f} s" + (f"   dataset {sha}" if sha else "")


def print_peaks(run: dict) -> None:
    for cmdline, kib in run["peaks"]:
        label = cmdline if len(cmdline) < 90 else cmdline[:87] + "..."
        print(f"    peak RSS {kib / 1024:7.0f} MiB  {label}")


def cookbook_child(path: str) -> None:
    import resource

    started = time.perf_counter()
    result = cookbook(Path(path))
    result["seconds"] = time.perf_counter() - started
    result["peak_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(result))


# --- main ----------------------------------------------------------------------------------------------


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)  # each figure shows as soon as it is measured
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("n", type=int, nargs="?", default=100_000)
    parser.add_argument("--scaling-n", type=int, help="Conversations for the Dask scaling figure (default N)")
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--skip-incremental", action="store_true")
    parser.add_argument("--cookbook-child")
    args = parser.parse_args()
    if args.cookbook_child:
        return cookbook_child(args.cookbook_child)

    with tempfile.TemporaryDirectory(prefix="ftflow-bench-") as tmp:
        tmp_path = Path(tmp)
        source = tmp_path / "input.jsonl"
        write_input(source, args.n)
        print(f"input: {args.n:,} conversations, {source.stat().st_size / 2**20:.0f} MiB, {os.cpu_count()} cores")

        # A first command on a new PREFECT_HOME creates Prefect's database (seconds, once per
        # machine): done here, so neither the full run nor the 20-line figures pay for it.
        small = tmp_path / "small.jsonl"
        write_input(small, 20)
        prepare(small, tmp_path / "small-out", tmp_path / "small-work")

        full = prepare(source, tmp_path / "out", tmp_path / "work")
        print(describe("ftflow prepare (CLI, defaults)", full))
        print_peaks(full)
        book = timed([sys.executable, __file__, "--cookbook-child", str(source)])
        book_result = json.loads(book["output"].strip().splitlines()[-1])
        print(f"{'cookbook loop (1 process)':<34} {book['seconds']:8.1f} s   peak RSS "
              f"{book_result['peak_kib'] / 1024:.0f} MiB, {book_result['tokens']:,} tokens")
        print(f"ratio cookbook / ftflow: {book['seconds'] / full['seconds']:.2f}x "
              f"(shards {full['report']['shards']['total']}, {full['report']['records_read']:,} records read, "
              f"{full['report']['tokens']['total']:,} tokens)")

        warm = prepare(small, tmp_path / "small-out", tmp_path / "small-work-2")
        print(describe("20 lines, warm PREFECT_HOME", warm))
        with running_prefect_server() as api_url:
            prepare(small, tmp_path / "small-out", tmp_path / "small-work-3", env={"PREFECT_API_URL": api_url})
            served = prepare(small, tmp_path / "small-out", tmp_path / "small-work-4",
                             env={"PREFECT_API_URL": api_url})
        print(describe("20 lines, running Prefect server", served))
        imports = sorted(timed([sys.executable, "-c", "import prefect"])["seconds"] for _ in range(3))
        print(f"python -c 'import prefect': {imports[1]:.2f} s (median of 3); 20 lines: warm PREFECT_HOME "
              f"{warm['seconds'] / imports[1]:.2f}x, running server {served['seconds'] / imports[1]:.2f}x")

        if not args.skip_incremental:
            # Logs grow in place: append to the very file the full run read (a stored shard is
            # keyed by its file's path too, since rejections and features name it).
            write_input(source, max(1, args.n // 100), mode="a", start=args.n)
            # The same re-run with a running server (what `prefect_server = "auto"` keeps at a
            # terminal), on a copy of the work dir as the full run left it.
            shutil.copytree(tmp_path / "work", tmp_path / "work-served")
            again = prepare(source, tmp_path / "out-inc", tmp_path / "work")
            with running_prefect_server() as api_url:
                prepare(small, tmp_path / "small-out", tmp_path / "small-work-5", env={"PREFECT_API_URL": api_url})
                again_served = prepare(source, tmp_path / "out-inc-served", tmp_path / "work-served",
                                       env={"PREFECT_API_URL": api_url})
            scratch = prepare(source, tmp_path / "out-scratch", tmp_path / "work-scratch")
            for name, run in (("+1% appended, re-run", again), ("  the same, running Prefect server", again_served)):
                print(describe(name, run) + f"   reused {run['report']['shards']['reused']}"
                      f"/{run['report']['shards']['total']} shards; {run['seconds'] / book['seconds']:.0%} of the "
                      "cookbook loop on the whole input")
            print(describe("+1% appended, from scratch", scratch))
            same = {run["report"]["dataset_sha256"] for run in (again, again_served, scratch)} == {
                scratch["report"]["dataset_sha256"]}
            print(f"incremental / full: {again['seconds'] / full['seconds']:.0%}; same dataset_sha256 as from "
                  f"scratch: {same}")

        if not args.skip_scaling:
            # The input grew if the incremental figure ran: scaling then writes its own.
            scaling(args.scaling_n or args.n, tmp_path, full if args.skip_incremental and not args.scaling_n else None)


def scaling(n: int, tmp_path: Path, full: dict | None) -> None:
    from dask.distributed import LocalCluster

    source = tmp_path / "input.jsonl"
    if full is None:
        source = tmp_path / "scaling.jsonl"
        write_input(source, n)
    runs = {}
    # As on a real cluster, the workers and the CLI report to one Prefect server (docs/prepare.md: Shards,
    # workers, Dask); a worker without PREFECT_API_URL would start a temporary server of its own.
    with running_prefect_server() as api_url:
        os.environ["PREFECT_API_URL"] = api_url  # inherited by the cluster's worker processes
        try:
            for workers in (1, 2):
                with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
                    runs[workers] = prepare(source, tmp_path / f"out-dask{workers}", tmp_path / f"work-dask{workers}",
                                            "--dask-address", cluster.scheduler_address)
                print(describe(f"Dask LocalCluster, {workers} worker(s)", runs[workers]))
        finally:
            del os.environ["PREFECT_API_URL"]
    same = runs[1]["report"]["dataset_sha256"] == runs[2]["report"]["dataset_sha256"]
    if full is not None:
        same = same and full["report"]["dataset_sha256"] == runs[1]["report"]["dataset_sha256"]
    print(f"scaling 2 workers / 1 worker ({n:,} conversations): {runs[1]['seconds'] / runs[2]['seconds']:.2f}x; "
          f"identical outputs: {same}")


if __name__ == "__main__":
    main()
