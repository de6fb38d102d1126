"""The shard runner: where shard tasks run. Local worker processes by default (all cores), a
thread of the flow's own process where a worker would cost more than it saves, or an existing
Dask cluster (`dask_address`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect.task_runners import ProcessPoolTaskRunner

from ftflow.errors import ConfigError
from ftflow.settings import Settings
from tasks.passes.base import RecordPass
from tasks.shards.plan import DEFAULT_SHARD_BYTES, Shard
from tasks.shards.store import stored_result


def start_shard_worker() -> None:
    """Worker initializer: the worker ends with its parent, and exits without the interpreter's
    final collections (ftflow/process_exit.py), which the pool's shutdown would wait for; its
    log records go to the flow run only, never to the terminal (ftflow/terminal.py)."""
    from ftflow.process_exit import exit_with_parent, skip_final_collections
    from ftflow.terminal import run_logs_only

    exit_with_parent()
    skip_final_collections()
    run_logs_only()


def _bytes_to_read(shard: Shard) -> int:
    """About how many bytes preparing the shard reads (a whole file, for a part of a Parquet file)."""
    if shard.kind == "sql":
        return 1 << 62  # unknown, and a table can be large: worth a worker
    size = Path(shard.source).stat().st_size
    return (shard.end if shard.end is not None else size) - shard.start


def shards_to_prepare_here(parameters: dict[str, Any], shard_bytes: int = DEFAULT_SHARD_BYTES) -> set[Shard]:
    """Of the shards a mapped shard task is given, those not worth a worker process: the ones
    whose result is stored already, and those left to prepare if they are one shard or less
    than shard_bytes in all."""
    def value(name: str) -> Any:
        return getattr(parameters.get(name), "value", parameters.get(name))  # unwrap `unmapped`

    shards, record_pass, work_dir = value("shard"), value("record_pass"), value("work_dir")
    if not isinstance(shards, list) or not isinstance(record_pass, RecordPass) or work_dir is None:
        return set()
    fingerprint = record_pass.fingerprint()
    stored = {shard for shard in shards if stored_result(shard, fingerprint, Path(work_dir)) is not None}
    to_prepare = [shard for shard in shards if shard not in stored]
    if len(to_prepare) <= 1 or sum(_bytes_to_read(shard) for shard in to_prepare) < shard_bytes:
        return stored | set(to_prepare)
    return stored


class ShardProcessPool(ProcessPoolTaskRunner):
    """Prefect's process pool whose workers report to this process's Prefect server, and die with it.

    Without PREFECT_API_URL, Prefect runs a temporary server for the command; each worker
    process would start one of its own (seconds each, and task runs recorded elsewhere).
    Workers inherit the environment at start, so the server's URL is put there first.

    A worker process takes seconds to start (it imports Prefect and the stages). Shards whose
    result is stored already, and shards left to prepare that are only one or less than
    shard_bytes in all, run on threads of this process instead (`shards_to_prepare_here`): a
    small input starts no worker, nor does a re-run of grown input for its one new range.
    """

    def __init__(self, max_workers: int | None = None, shard_bytes: int = DEFAULT_SHARD_BYTES,
                 **options: Any) -> None:
        from prefect.task_runners import ThreadPoolTaskRunner

        options.setdefault("initializer", start_shard_worker)
        super().__init__(max_workers=max_workers, **options)
        self._shard_bytes = shard_bytes
        self._here = ThreadPoolTaskRunner(max_workers=self._max_workers)
        self._shards_here: set[Shard] = set()

    def duplicate(self) -> ShardProcessPool:
        copy = super().duplicate()  # Prefect runs each flow run on a copy of its runner
        copy._shard_bytes = self._shard_bytes
        return copy

    def __enter__(self) -> ShardProcessPool:
        super().__enter__()
        self._here.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._here.__exit__(*exc)
        super().__exit__(*exc)

    def map(self, task: Any, parameters: dict[str, Any], wait_for: Any = None) -> Any:
        self._shards_here = shards_to_prepare_here(parameters, self._shard_bytes)
        return super().map(task, parameters, wait_for)

    def submit(self, task: Any, parameters: dict[str, Any], wait_for: Any = None, dependencies: Any = None) -> Any:
        from prefect.context import FlowRunContext
        from prefect.settings import get_current_settings

        if parameters.get("shard") in self._shards_here:
            return self._here.submit(task, parameters, wait_for, dependencies)
        context = FlowRunContext.get()
        if context is not None and get_current_settings().api.url is None and "PREFECT_API_URL" not in os.environ:
            os.environ["PREFECT_API_URL"] = str(context.client.api_url)
        return super().submit(task, parameters, wait_for, dependencies)


def task_runner_for(workers: int | None, dask_address: str | None, shard_bytes: int = DEFAULT_SHARD_BYTES) -> Any:
    """Where shards run: an existing Dask cluster, or local processes (all cores by default;
    see ShardProcessPool for the shards it keeps in this process)."""
    if dask_address:
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise ConfigError("--dask-address needs prefect-dask: pip install 'ftflow[dask]'") from None
        return DaskTaskRunner(address=dask_address)
    if workers == 1:
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=1)
    return ShardProcessPool(max_workers=workers or os.cpu_count(), shard_bytes=shard_bytes)


# prepare's own task runner; a flow run on it takes its runner from its settings (`shard_runner`).
DEFAULT_RUNNER = ShardProcessPool()


@contextmanager
def shard_runner(settings: Settings) -> Iterator[None]:
    """Run the current flow run's tasks where the settings say (workers, dask_address, shard_mb),
    when the flow runs on its own task runner: a deployment, a direct call, the CLI, retrain. A
    runner chosen with `prepare.with_options(task_runner=...)` is kept."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow is None or context.flow.task_runner is not DEFAULT_RUNNER:
        yield
        return
    with task_runner_for(settings.workers, settings.dask_address, settings.shard_bytes) as runner, \
            context.model_copy(update={"task_runner": runner}):
        yield
