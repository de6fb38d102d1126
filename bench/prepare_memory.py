"""Peak memory and speed of the streaming prepare stages against loading the input whole.

    .venv/bin/python bench/prepare_memory.py [--records 200000]

Writes a synthetic chat JSONL of N conversations, then runs, each in its own process so
that peak RSS is measured separately:
- baseline: read every line into a list of dicts (what a naive loader does), count tokens;
- ftflow:   extract -> normalise -> per-example checks -> split, as `prepare` streams them.
Prints both peaks and throughputs, and the ratios ftflow/baseline. Memory of the streaming
stages should stay flat as N grows (only per-example numbers and 32-byte digests are kept);
the baseline's grows with the input.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def write_input(path: Path, records: int) -> None:
    rng = random.Random(1)
    words = ["Bestellung", "Akku", "Rahmen", "Garantie", "Rechnung", "Termin", "Werkstatt", "bitte", "danke"]
    with open(path, "w", encoding="utf-8") as f:
        for i in range(records):
            question = " ".join(rng.choice(words) for _ in range(20)) + f" {i}"
            answer = json.dumps({"intent": "akku", "antwort": " ".join(rng.choice(words) for _ in range(30))})
            f.write(json.dumps({"messages": [{"role": "system", "content": "Du bist der Support."},
                                             {"role": "user", "content": question},
                                             {"role": "assistant", "content": answer}]}) + "\n")


def run_baseline(path: Path) -> int:
    from ftflow.encodings import get_encoding
    from tasks.budget import count_example_tokens

    encoding = get_encoding("o200k_base")
    examples = [json.loads(line) for line in open(path, encoding="utf-8")]
    return sum(count_example_tokens(e, encoding)[0] for e in examples)


def run_ftflow(path: Path, work: Path) -> int:
    from ftflow.encodings import get_encoding
    from tasks.extract import ExtractOptions, extract_to_files
    from tasks.quality import validate_file
    from tasks.transform import TransformOptions, normalize_file, split_file

    extracted = extract_to_files([path], ExtractOptions(), work)
    normalized = normalize_file(Path(extracted.candidates_path), TransformOptions(pii="off"), work)
    validated = validate_file(Path(normalized.path), get_encoding("o200k_base"), 65536, work)
    split = split_file(Path(validated.valid_path), 0.1, work, work)
    return split.train + split.validation


def child(mode: str, path: Path) -> None:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        result = run_baseline(path) if mode == "baseline" else run_ftflow(path, Path(work))
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": mode, "seconds": seconds, "peak_mib": peak_mib, "result": result}))


def measure(mode: str, path: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--input", str(path)], check=True,
                         capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--child")
    parser.add_argument("--input", type=Path)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.input)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "input.jsonl"
        write_input(path, args.records)
        size_mib = path.stat().st_size / 2**20
        baseline, ftflow = measure("baseline", path), measure("ftflow", path)
    print(f"input: {args.records:,} conversations, {size_mib:.0f} MiB")
    for m in (baseline, ftflow):
        print(f"{m['mode']:>9}: peak RSS {m['peak_mib']:7.0f} MiB, {m['seconds']:6.1f} s, "
              f"{args.records / m['seconds']:9,.0f} records/s")
    print(f"ratio ftflow/baseline: peak memory {ftflow['peak_mib'] / baseline['peak_mib']:.2f}, "
          f"time {ftflow['seconds'] / baseline['seconds']:.2f}")


if __name__ == "__main__":
    main()
