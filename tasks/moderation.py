"""Moderation pre-check: screen every example with the backend's moderation endpoint before upload.

Providers screen training data themselves, after upload: Azure fails the job ("failed RAI
checks for harm types"), OpenAI blocks the trained model after its moderation evaluation.
This stage asks the backend's own endpoint first (OpenAI and the local service:
`omni-moderation-latest`, free) and, by the `moderation` setting:

- `report`: counts the flagged examples per category (report.json `moderation`, the
  `ftflow-moderation` table artifact) and keeps them;
- `reject`: also moves them from train/validation to `rejected.jsonl` with the reason
  `moderation:<category>` (the highest-scoring flagged category, on a tie the more specific
  one, `self-harm/intent` before `self-harm`; the detail names all);
- `off`: nothing (the default where the backend has no moderation endpoint).

Each shard's kept examples are screened once, and what was found is stored with the shard's
result (`ShardScreening`): a re-run on grown input screens only its new shards, and reads
nothing of the others but their few flagged lines. The verdicts then follow the examples into
the de-duplicated split (`locate`), so duplicates are counted once. The text of an example is
its messages' content (strings and text parts), one per line; of a DPO pair, its input's and
both outputs'. Requests carry `moderation_batch_size` texts, `moderation_concurrency` of them in
flight at once (a remote endpoint's requests mostly wait on the network); each
answer is stored as its request returns in a cache keyed by the model and the text's sha256
(`<work_dir>/moderation.sqlite3`, committed every half second), so a text answered once is not
sent again, in any shard or run, and a run stopped half-way goes on where it stopped.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sqlite3
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE

from ftflow.errors import ConfigError
from ftflow.jsonl import loads_exact, write_whole
from tasks.quarantine import SPLITS, quarantine
from tasks.reduce import ReduceResult
from tasks.shards.store import ShardResult

if TYPE_CHECKING:
    from ftflow.run_resources import RunResources

# texts -> for each text, its flagged categories, highest score first (empty: not flagged)
Classifier = Callable[[list[str]], list[list[str]]]


@dataclass(frozen=True)
class ModerationOptions:
    """What the moderation stage does; `model` is the backend's moderation model (None: it has none)."""

    mode: str
    model: str | None
    batch_size: int
    concurrency: int

    @classmethod
    def from_settings(cls, settings: Any) -> ModerationOptions:
        from ftflow.providers import provider_class

        model = provider_class(settings.backend).moderation_model
        mode = settings.moderation or ("report" if model else "off")
        if mode != "off" and model is None:
            raise ConfigError(f"moderation = {mode}: the {settings.backend} backend has no moderation endpoint; "
                              "set moderation = off")
        return cls(mode=mode, model=model, batch_size=settings.moderation_batch_size,
                   concurrency=settings.moderation_concurrency)


@dataclass
class ModerationResult:
    """What moderation found; `split` is the dataset after it (fewer examples with `reject`)."""

    mode: str
    model: str | None
    split: ReduceResult
    examples: int = 0
    flagged: int = 0
    by_category: dict[str, int] = field(default_factory=dict)  # flagged examples per category
    requests: int = 0  # moderation requests this run sent
    # Of the shards' examples (before de-duplication), those answered without a request of this
    # run: from the cache of answers, or a shard's stored screening.
    cached: int = 0
    rejected: dict[str, int] = field(default_factory=dict)  # `moderation:<category>` -> examples quarantined
    rejected_path: str | None = None

    def report(self) -> dict[str, Any]:
        return {"mode": self.mode, "model": self.model, "examples": self.examples, "flagged": self.flagged,
                "by_category": self.by_category, "requests": self.requests, "cached": self.cached,
                "rejected": sum(self.rejected.values())}


def record_messages(record: dict[str, Any]) -> list[Any]:
    """The messages of a chat example, or of a preference pair: its input, then both outputs."""
    if "messages" in record:
        return record["messages"]
    return [*record.get("input", {}).get("messages", []), *record.get("preferred_output", []),
            *record.get("non_preferred_output", [])]


def record_text(record: dict[str, Any]) -> str:
    """The text moderation sees of one record: its messages' content, one message per line."""
    texts = []
    for message in record_messages(record):
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts += [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return "\n".join(texts)


def example_text(line: bytes) -> str:
    """`record_text` of one kept example's line (a shard's `examples.jsonl`).

    Read by orjson, not `loads_exact`: only strings are taken from it, which orjson reads as the
    standard library does; `loads_exact`'s scan of the line for 19-digit runs (to keep integers
    beyond 64 bits exact) cost more than the parse. A line orjson refuses goes to `loads_exact`,
    which reads it, or refuses it, as before (a differential test compares the two)."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        record = loads_exact(line)
    return record_text(record)


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class ModerationCache:
    """Answers of the moderation endpoint by (model, sha256 of the text), in SQLite.

    Answers are committed at least every `COMMIT_SECONDS`, at the end of each screening and on
    close: a commit per batch cost about 0.55 ms of CPU, a sixth of the client's work per
    request. A process killed between commits loses at most that half second of answers, which
    the next run asks again.
    """

    COMMIT_SECONDS = 0.5

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path)
        # In WAL mode with synchronous=NORMAL a commit survives the process being killed (only a
        # crash of the machine can lose the last ones, answers asked again), and does not wait
        # for the disk each time.
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS moderation (model TEXT, digest TEXT, categories TEXT, "
                        "PRIMARY KEY (model, digest))")
        self._committed = time.monotonic()

    def get_many(self, model: str, digests: list[str]) -> dict[str, list[str]]:
        marks = ",".join("?" * len(digests))
        rows = self.db.execute(f"SELECT digest, categories FROM moderation WHERE model = ? AND digest IN ({marks})",
                               [model, *digests])
        return {digest: json.loads(categories) for digest, categories in rows}

    def put_many(self, model: str, answers: dict[str, list[str]]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO moderation VALUES (?, ?, ?)",
                            [(model, digest, json.dumps(c)) for digest, c in answers.items()])
        if time.monotonic() - self._committed >= self.COMMIT_SECONDS:
            self.commit()

    def commit(self) -> None:
        self.db.commit()
        self._committed = time.monotonic()

    def close(self) -> None:
        self.commit()
        self.db.close()


def _chunks(path: Path, size: int) -> Iterator[list[bytes]]:
    chunk: list[bytes] = []
    with open(path, "rb") as f:
        for line in f:
            chunk.append(line)
            if len(chunk) == size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


@dataclass
class Batch:
    """One request's worth of texts: their digests in file order, the answers known before asking,
    and the request for the rest (None: every answer was known)."""

    start: int  # line index of its first text in the split file
    digests: list[str]
    known: dict[str, list[str]]
    asked: list[str]
    request: Future[list[list[str]]] | None


def screen(path: Path, classify: Classifier, cache: ModerationCache, model: str, batch_size: int,
           counts: Counter[str], concurrency: int = 1) -> dict[int, list[str]]:
    """Flagged categories by line index of one split file; only texts the cache lacks are sent,
    batch by batch, `concurrency` requests in flight (each answer stored as its request returns,
    in file order; the cache is this thread's alone)."""
    flagged: dict[int, list[str]] = {}
    in_flight: deque[Batch] = deque()

    def settle(batch: Batch) -> None:
        known = batch.known
        counts["cached"] += sum(d in known for d in batch.digests)
        if batch.request is not None:
            answers = dict(zip(batch.asked, batch.request.result(), strict=True))
            cache.put_many(model, answers)
            known |= answers
            counts["requests"] += 1
        for offset, digest in enumerate(batch.digests):
            if known[digest]:
                flagged[batch.start + offset] = known[digest]

    index = 0
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="moderation") as requests:
        for chunk in _chunks(path, batch_size):
            texts = [example_text(line) for line in chunk]
            digests = [text_sha256(text) for text in texts]
            known = cache.get_many(model, sorted(set(digests)))
            ask = {d: t for d, t in zip(digests, texts, strict=True) if d not in known}
            request = requests.submit(classify, list(ask.values())) if ask else None
            in_flight.append(Batch(index, digests, known, list(ask), request))
            index += len(chunk)
            while len(in_flight) >= concurrency:
                settle(in_flight.popleft())
        while in_flight:
            settle(in_flight.popleft())
    cache.commit()
    counts["examples"] += index
    return flagged


@dataclass
class ShardScreening:
    """What moderation found among one shard's kept examples: the flagged ones by the sha256 of
    their line (the `line_sha256` the shard stores), with their content digest and categories."""

    model: str
    examples: int
    flagged: dict[str, tuple[str, list[str]]]  # line_sha256 -> (content_sha256, categories)

    @staticmethod
    def path(directory: Path, model: str) -> Path:
        """Where a shard's screening by `model` is stored, beside its result. Keyed by this module's
        code too: a change in what moderation reads of an example screens every shard again (the
        cache of answers still answers the texts that did not change)."""
        return directory / "moderation" / f"{_screening_key(model)}.json"

    @classmethod
    def stored(cls, directory: Path, model: str) -> ShardScreening | None:
        path = cls.path(directory, model)
        if not path.exists():
            return None
        stored = orjson.loads(path.read_bytes())
        return cls(model=stored["model"], examples=stored["examples"],
                   flagged={line: (content, categories) for line, (content, categories) in stored["flagged"].items()})

    def store(self, directory: Path) -> None:
        """Written whole (a reader sees all of it or nothing)."""
        path = self.path(directory, self.model)
        path.parent.mkdir(exist_ok=True)
        write_whole(path, orjson.dumps({"model": self.model, "examples": self.examples, "flagged": self.flagged}))


@functools.cache
def _screening_key(model: str) -> str:
    """The model and this module's code, hashed once per process (not once per shard read or stored)."""
    return hashlib.sha256(model.encode() + Path(__file__).read_bytes()).hexdigest()[:16]


def unscreened_examples(shards: list[ShardResult], model: str) -> int:
    """The kept examples of the shards without a stored screening by `model`: what is left to screen."""
    return sum(shard.kept for shard in shards if not ShardScreening.path(Path(shard.directory), model).exists())


def screen_shard(directory: Path, classifier: Callable[[], Classifier], cache: ModerationCache,
                 options: ModerationOptions, counts: Counter[str]) -> ShardScreening:
    """The shard's stored screening, else its examples screened (only texts the cache lacks are sent;
    `classifier` is called for the classifier only then) and the screening stored."""
    assert options.model is not None
    if (stored := ShardScreening.stored(directory, options.model)) is not None:
        counts["cached"] += stored.examples
        return stored
    screened: Counter[str] = Counter()
    found = screen(directory / "examples.jsonl", classifier(), cache, options.model, options.batch_size, screened,
                   options.concurrency)
    counts["cached"] += screened["cached"]
    counts["requests"] += screened["requests"]
    rows = pq.read_table(directory / "features.parquet", columns=["line_sha256", "content_sha256"])
    lines, contents = rows.column("line_sha256"), rows.column("content_sha256")
    screening = ShardScreening(options.model, screened["examples"], {
        lines[index].as_py(): (contents[index].as_py(), categories) for index, categories in found.items()})
    screening.store(directory)
    return screening


def locate(split: ReduceResult, flagged: dict[str, tuple[str, list[str]]]) -> dict[str, dict[int, list[str]]]:
    """Flagged categories by line index of each split file, for the flagged lines (by line_sha256) it holds.

    The split holds one example per content digest, but not always the copy that was flagged (a
    copy differing in case or spaces may be kept): the features' content digests name the
    candidate lines, and the sha256 of each candidate's bytes decides."""
    found: dict[str, dict[int, list[str]]] = {name: {} for name in SPLITS}
    if not flagged:
        return found
    features = pq.read_table(split.features_path, columns=["split", "content_sha256"])
    contents = pa.array(sorted({content for content, _ in flagged.values()}), pa.string())
    paths = {"train": split.train_path, "validation": split.validation_path}
    for name in SPLITS:
        in_split = features.filter(pc.equal(features.column("split"), name)).column("content_sha256")
        candidates = set(pc.indices_nonzero(pc.is_in(in_split, value_set=contents)).to_pylist())
        if not candidates:
            continue
        last = max(candidates)
        with open(paths[name], "rb") as lines:
            for index, line in enumerate(lines):
                if index in candidates and (hit := flagged.get(hashlib.sha256(line).hexdigest())) is not None:
                    found[name][index] = hit[1]
                if index == last:
                    break
    return found


def moderate_dataset(split: ReduceResult, shards: list[ShardResult], staged_dir: Path, options: ModerationOptions,
                     classifier: Callable[[], Classifier], cache: ModerationCache) -> ModerationResult:
    """Screen the shards' examples, count what the split holds of the flagged; with `reject`, move
    those into `moderation-rejected.jsonl`. `classifier` gives the classifier, called only when a
    shard has no stored screening (a re-run on unchanged input asks the backend nothing)."""
    result = ModerationResult(mode=options.mode, model=options.model, split=split)
    if options.mode == "off" or options.model is None:
        return result
    counts: Counter[str] = Counter()
    flagged_lines: dict[str, tuple[str, list[str]]] = {}
    for shard in sorted(shards, key=lambda shard: shard.index):
        flagged_lines |= screen_shard(Path(shard.directory), classifier, cache, options, counts).flagged
    flagged = locate(split, flagged_lines)
    by_category = Counter(category for found in flagged.values() for categories in found.values()
                          for category in categories)
    result.examples = split.train + split.validation
    result.requests, result.cached = counts["requests"], counts["cached"]
    result.flagged = sum(len(found) for found in flagged.values())
    result.by_category = dict(sorted(by_category.items(), key=lambda item: (-item[1], item[0])))
    if options.mode != "reject" or not result.flagged:
        return result

    verdicts = {name: {index: (f"moderation:{categories[0]}",
                               f"flagged by {options.model}: {', '.join(categories)}")
                       for index, categories in flagged[name].items()} for name in SPLITS}
    moved = quarantine(split, verdicts, staged_dir / "moderation-rejected.jsonl")
    result.split, result.rejected, result.rejected_path = moved.split, moved.rejected, moved.rejected_path
    return result


def by_score(categories: dict[str, bool], scores: dict[str, float]) -> list[str]:
    """The flagged categories, highest score first; on a tie the more specific one."""
    return sorted((c for c, on in categories.items() if on), key=lambda c: (-scores.get(c, 0), "/" not in c, c))


def flagged_categories(response: dict[str, Any]) -> list[list[str]]:
    """Per result of a moderation answer (its JSON), its flagged categories, highest score first; on a
    tie the more specific one (`self-harm/intent` before `self-harm`). As `flagged_categories_reference`
    on the SDK's models, without building them (they cost more than the rest of the client's work)."""
    return [by_score(result["categories"], result["category_scores"]) for result in response["results"]]


def flagged_categories_reference(response: Any) -> list[list[str]]:
    """`flagged_categories` of the SDK's `ModerationCreateResponse`: the plain definition."""
    return [by_score(result.categories.model_dump(by_alias=True), result.category_scores.model_dump(by_alias=True))
            for result in response.results]


def openai_classifier(client: Any, model: str) -> Classifier:
    """A Classifier over an OpenAI-SDK client's `moderations.create` (OpenAI, the local service); the
    answer's JSON is read as it came (`with_raw_response`: the SDK's retries, errors and auth as ever)."""

    def classify(texts: list[str]) -> list[list[str]]:
        response = client.moderations.with_raw_response.create(model=model, input=texts)
        return flagged_categories(orjson.loads(response.content))

    return classify


def moderation_table(result: ModerationResult) -> list[dict[str, Any]]:
    """The artifact's rows: flagged examples per category, and how many were quarantined for it."""
    return [{"category": category, "flagged examples": n,
             "quarantined": result.rejected.get(f"moderation:{category}", 0)}
            for category, n in result.by_category.items()]


@task(name="moderate-examples", cache_policy=NO_CACHE)
def moderate_examples(shards: list[ShardResult], split: ReduceResult, staged_dir: str, options: ModerationOptions,
                      resources: RunResources) -> ModerationResult:
    """Return what moderation found (and, with `reject`, the split without the flagged examples)."""
    from prefect.artifacts import create_table_artifact
    from prefect.logging import get_run_logger

    from ftflow.client import expect_local_requests

    if options.mode == "off" or options.model is None:
        return ModerationResult(mode="off", model=options.model, split=split)
    model = options.model

    @functools.cache
    def classifier() -> Classifier:
        # Much to screen on the local backend: its service then runs in a process of its own.
        expect_local_requests(resources.settings, unscreened_examples(shards, model))
        return openai_classifier(resources.provider.chat_client(), model)

    cache = ModerationCache(Path(resources.settings.work_dir) / "moderation.sqlite3")
    try:
        result = moderate_dataset(split, shards, Path(staged_dir), options, classifier, cache)
    finally:
        cache.close()
    create_table_artifact(moderation_table(result) or [{"category": "(none flagged)", "flagged examples": 0,
                                                        "quarantined": 0}],
                          key="ftflow-moderation",
                          description=f"Moderation ({options.model}, {options.mode}): flagged examples per category")
    get_run_logger().info("moderation (%s, %s): %d of %d examples flagged%s; %d requests, %d from the cache",
                          options.model, options.mode, result.flagged, result.examples,
                          f", {sum(result.rejected.values())} quarantined" if result.rejected else "",
                          result.requests, result.cached)
    return result
