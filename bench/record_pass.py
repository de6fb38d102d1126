"""The record pass alone, in one process: the reference chat pass, the fast one, and the cookbook's loop.

    .venv/bin/python bench/record_pass.py [N] [--repeat R]

Generates N conversations (default 200,000; bench/prepare_vs_cookbook.py's generator: fixed
seed, about 1 in 10 with PII, 2% duplicates, 0.5% bad records) into one file, then times on
it, R times each (default 2; the machine is shared, so figures move between runs):
- reference: `ChatPass.write` on one shard of the whole file (tasks/passes/chat.py);
- fast: `FastChatPass.write` on the same shard (tasks/passes/fast_chat.py), its files checked
  byte for byte against the reference's;
- cookbook: the data-preparation notebook's loop (`prepare_vs_cookbook.cookbook`).
Prints microseconds per record of wall time and of user CPU time, the ratios, and how often
the fast pass's memo of strings was hit. Each runs once on 500 conversations first.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from prepare_vs_cookbook import cookbook, write_input  # noqa: E402

from tasks.passes.chat import ChatPass  # noqa: E402
from tasks.passes.fast_chat import FastChatPass  # noqa: E402
from tasks.readers import ExtractOptions  # noqa: E402
from tasks.shards.plan import plan_shards  # noqa: E402
from tasks.transform import TransformOptions  # noqa: E402

MODEL = "gpt-4o-mini-2024-07-18"
OUTPUTS = ("examples.jsonl", "rejected.jsonl", "features.parquet", "result.json")


def user_seconds() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_utime


def timed(run: Callable[[], object]) -> tuple[float, float, object]:
    """Wall and user CPU seconds of one call, and what it returned."""
    wall, cpu = time.perf_counter(), user_seconds()
    value = run()
    return time.perf_counter() - wall, user_seconds() - cpu, value


def same_outputs(a: Path, b: Path) -> bool:
    """The two shard folders hold the same files (result.json without its folder)."""
    import orjson
    import pyarrow.parquet as pq

    def result(folder: Path) -> dict:
        return {k: v for k, v in orjson.loads((folder / "result.json").read_bytes()).items() if k != "directory"}

    return ((a / "examples.jsonl").read_bytes() == (b / "examples.jsonl").read_bytes()
            and (a / "rejected.jsonl").read_bytes() == (b / "rejected.jsonl").read_bytes()
            and pq.read_table(a / "features.parquet").equals(pq.read_table(b / "features.parquet"))
            and result(a) == result(b))


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("n", type=int, nargs="?", default=200_000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ftflow-record-pass-") as tmp:
        tmp_path = Path(tmp)
        source = tmp_path / "input.jsonl"
        write_input(source, args.n)
        extract, transform = ExtractOptions(), TransformOptions()
        reference = ChatPass.for_model(MODEL, extract, transform, 0.1)
        fast = FastChatPass.for_model(MODEL, extract, transform, 0.1)
        shard = plan_shards([str(source)], extract, source.stat().st_size + 1).shards[0]
        # What each loads once (tokenizers, phone metadata, regexes, pyarrow) is loaded before timing.
        write_input(tmp_path / "warm.jsonl", 500)
        warm = plan_shards([str(tmp_path / "warm.jsonl")], extract, 1 << 30).shards[0]
        reference.write(warm, tmp_path / "warm-reference")
        fast.write(warm, tmp_path / "warm-fast")
        cookbook(tmp_path / "warm.jsonl")
        print(f"input: {args.n:,} conversations, {source.stat().st_size / 2**20:.0f} MiB, one shard; "
              f"{reference.encoding} for the passes, cl100k_base for the cookbook")
        figures: dict[str, list[tuple[float, float]]] = {"reference": [], "fast": [], "cookbook": []}
        for attempt in range(args.repeat):
            for folder in ("reference", "fast"):
                shutil.rmtree(tmp_path / folder, ignore_errors=True)
            wall, cpu, _ = timed(lambda: reference.write(shard, tmp_path / "reference"))
            figures["reference"].append((wall, cpu))
            wall, cpu, (_, walk) = timed(lambda: fast.write_measured(shard, tmp_path / "fast"))
            figures["fast"].append((wall, cpu))
            wall, cpu, _ = timed(lambda: cookbook(source))
            figures["cookbook"].append((wall, cpu))
            us = {name: (runs[-1][0] / args.n * 1e6, runs[-1][1] / args.n * 1e6) for name, runs in figures.items()}
            print(f"run {attempt + 1}: " + "   ".join(f"{name} {wall:6.1f} us wall {cpu:6.1f} us user"
                                                    for name, (wall, cpu) in us.items()))
            same = same_outputs(tmp_path / "reference", tmp_path / "fast")
            print(f"       fast: same files as the reference: {same}; memo hit rate {walk.hit_rate:.1%} of "
                  f"{walk.lookups:,} strings; the walk kept {walk.kept:,} records, the reference's steps the rest")
        best = {name: (min(w for w, _ in runs), min(c for _, c in runs)) for name, runs in figures.items()}
        print("best of runs, per record:")
        for name, (wall, cpu) in best.items():
            print(f"  {name:<10} {wall / args.n * 1e6:6.1f} us wall   {cpu / args.n * 1e6:6.1f} us user CPU")
        for a, b in (("reference", "fast"), ("cookbook", "fast"), ("reference", "cookbook")):
            print(f"  {a} / {b}: {best[a][0] / best[b][0]:.2f}x wall, {best[a][1] / best[b][1]:.2f}x user CPU")


if __name__ == "__main__":
    main()
