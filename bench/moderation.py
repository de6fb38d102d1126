"""The moderation pre-check on the in-process local service, end to end and part by part.

    .venv/bin/python bench/moderation.py [N] [--concurrency C] [--batch-size B] [--skip-parts]

Writes N de-duplicated chat examples (default 50,000; bench/prepare_vs_cookbook.py's generator,
about 1 in 100 with a phrase the local service flags) as a train split, starts the local service
in this process (as `ftflow prepare` does on the local backend) and times, with a fresh cache:
- end to end: `screen` (what moderation does with one shard's examples) with `openai_classifier`
  over the official SDK, the settings' defaults (batch 32, 4 in flight); wall and CPU (user+sys of the whole process:
  client, service and cache share it), microseconds per text;
- then each part on the same texts, old (reference) against new in this run, µs of CPU per text:
  the service's `classify` (`classify_reference`, the plain definition, against the fast path),
  serializing an answer (what FastAPI does with a route's `-> dict`: a validated copy, then
  pydantic's JSON, against `json_response`; the bytes compared), the client's parse (the SDK's
  models as it builds them, and two `model_dump`s, against `flagged_categories` on the JSON),
  and the pipeline's own work per text (`example_text`, `text_sha256`, the cache).
The end to end figure of an older commit: copy this script into a checkout of it and run it
there with this venv (it imports the code next to it; parts that commit lacks are skipped).
Prints the load average: the machine is shared, so figures move between runs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from prepare_vs_cookbook import conversation  # noqa: E402

FLAGGED = ["Ich will mich umbringen, das Rad ist kaputt.", "I will kill you if the bike is late.",
           "Ich werde ihn erschießen, wenn das Paket nicht kommt.", "Überall Blut, der Rahmen ist zerstückelt."]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(run: Callable[[], object]) -> tuple[float, float, object]:
    """Wall and CPU (user+sys) seconds of one call, and what it returned."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    value = run()
    return time.perf_counter() - wall, cpu_seconds() - cpu, value


def write_split(path: Path, n: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            record = conversation(rng, i)
            if rng.random() < 0.01:
                record["messages"][1]["content"] += " " + rng.choice(FLAGGED)
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def per_text(seconds: float, n: int) -> str:
    return f"{seconds / n * 1e6:8.1f} µs"


def end_to_end(service, split_dir: Path, n: int, batch_size: int, concurrency: int) -> dict:
    from collections import Counter

    import openai

    from tasks.moderation import ModerationCache, openai_classifier, screen

    client = openai.OpenAI(base_url=service.base_url, api_key=service.api_key, max_retries=2)
    model, counts = "omni-moderation-latest", Counter()
    with tempfile.TemporaryDirectory() as cache_dir:
        cache = ModerationCache(Path(cache_dir) / "moderation.sqlite3")
        try:
            wall, cpu, flagged = timed(lambda: screen(split_dir / "train.jsonl", openai_classifier(client, model),
                                                      cache, model, batch_size, counts, concurrency))
        finally:
            cache.close()
    found: dict = flagged  # type: ignore[assignment]
    by_category = Counter(category for categories in found.values() for category in categories)
    report = {"flagged": len(found), "by_category": dict(by_category.most_common()), "requests": counts["requests"]}
    print(f"end to end   {n} texts, batch {batch_size}, {concurrency} in flight: wall {wall:.1f} s "
          f"({per_text(wall, n)}/text), CPU {cpu:.1f} s ({per_text(cpu, n)}/text); "
          f"{report['flagged']} flagged {report['by_category']}, {report['requests']} requests")
    return {"wall": wall, "cpu": cpu, "report": report}


def parts(texts: list[str], batch_size: int) -> None:
    """Old against new for each part, on the same texts, in this process (CPU time)."""
    from localai.openai import moderations

    n = len(texts)
    reference = getattr(moderations, "classify_reference", None)
    _, new_cpu, new = timed(lambda: [moderations.classify(t) for t in texts])
    if reference is not None:
        _, ref_cpu, old = timed(lambda: [reference(t) for t in texts])
        assert old == new, "the fast classify differs from the reference"
        print(f"classify     reference {per_text(ref_cpu, n)}, fast {per_text(new_cpu, n)}: {ref_cpu / new_cpu:.2f}x")
    else:
        print(f"classify     {per_text(new_cpu, n)}")

    from pydantic import TypeAdapter

    batches = [{"id": "modr-x", "model": "omni-moderation-latest", "results": new[i: i + batch_size]}
               for i in range(0, n, batch_size)]
    as_dict = TypeAdapter(dict)

    def fastapi_way() -> list[bytes]:  # what FastAPI does with a route's `-> dict`: validate a copy, then dump it
        return [as_dict.dump_json(as_dict.validate_python(b, from_attributes=True)) for b in batches]

    _, old_cpu, old_bodies = timed(fastapi_way)
    try:
        from localai.openai.routes import json_response
    except ImportError:
        print(f"serialize    FastAPI's `-> dict` {per_text(old_cpu, n)}")
    else:
        _, new_cpu, responses = timed(lambda: [json_response(b) for b in batches])
        assert [r.body for r in responses] == old_bodies, "the route's bytes differ from FastAPI's"
        print(f"serialize    FastAPI's `-> dict` {per_text(old_cpu, n)}, json_response {per_text(new_cpu, n)}: "
              f"{old_cpu / new_cpu:.2f}x")

    import orjson
    from openai._models import construct_type
    from openai.types import ModerationCreateResponse

    from tasks import moderation as task

    def sdk_way() -> list[list[list[str]]]:  # what openai_classifier did: the SDK's models, two model_dumps
        out = []
        for body in old_bodies:
            response = construct_type(type_=ModerationCreateResponse, value=json.loads(body))  # as the SDK does
            answers = []
            for result in response.results:
                categories = result.categories.model_dump(by_alias=True)
                scores = result.category_scores.model_dump(by_alias=True)
                answers.append(sorted((c for c, on in categories.items() if on),
                                      key=lambda c: (-scores.get(c, 0), "/" not in c, c)))
            out.append(answers)
        return out

    _, old_cpu, old_answers = timed(sdk_way)
    answers_of = getattr(task, "flagged_categories", None)
    if answers_of is not None:
        _, new_cpu, new_answers = timed(lambda: [answers_of(orjson.loads(body)) for body in old_bodies])
        assert new_answers == old_answers, "the raw parse differs from the SDK models'"
        print(f"client parse SDK models {per_text(old_cpu, n)}, raw JSON {per_text(new_cpu, n)}: "
              f"{old_cpu / new_cpu:.2f}x")
    else:
        print(f"client parse SDK models {per_text(old_cpu, n)}")


def pipeline_parts(lines: list[bytes], batch_size: int) -> None:
    from tasks.moderation import ModerationCache, example_text, text_sha256

    n = len(lines)
    _, cpu, texts = timed(lambda: [example_text(line) for line in lines])
    print(f"example_text {per_text(cpu, n)}")
    _, cpu, digests = timed(lambda: [text_sha256(t) for t in texts])  # type: ignore[union-attr]
    print(f"text_sha256  {per_text(cpu, n)}")
    with tempfile.TemporaryDirectory() as cache_dir:
        cache = ModerationCache(Path(cache_dir) / "c.sqlite3")
        chunks = [digests[i: i + batch_size] for i in range(0, n, batch_size)]  # type: ignore[index]

        def use_cache() -> None:
            for chunk in chunks:
                cache.get_many("m", sorted(set(chunk)))
                cache.put_many("m", {d: [] for d in chunk})

        _, cpu, _ = timed(use_cache)
        cache.close()
    print(f"cache        {per_text(cpu, n)} (a lookup and a commit per batch)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("n", type=int, nargs="?", default=50_000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--skip-end-to-end", action="store_true")
    parser.add_argument("--skip-parts", action="store_true", help="end to end only (to profile it)")
    args = parser.parse_args()

    from localai.server import LocalService
    from tasks.moderation import example_text

    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; commit root {ROOT}")
    with tempfile.TemporaryDirectory() as tmp:
        split_dir = Path(tmp)
        write_split(split_dir / "train.jsonl", args.n)
        (split_dir / "validation.jsonl").write_bytes(b"")
        lines = (split_dir / "train.jsonl").read_bytes().splitlines(keepends=True)
        if not args.skip_end_to_end:
            with LocalService(data_dir=split_dir / "service") as service:
                end_to_end(service, split_dir, args.n, args.batch_size, args.concurrency)
        if not args.skip_parts:
            parts([example_text(line) for line in lines], args.batch_size)
            pipeline_parts(lines, args.batch_size)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
