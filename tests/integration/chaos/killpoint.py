"""Run the `ftflow` CLI, SIGKILLing itself at the named point in FTFLOW_CHAOS_KILL_AT (or sending
itself the signal in FTFLOW_CHAOS_SIGNAL: TERM, INT).

The patches wrap functions the pipeline calls through module attributes, so production code
has no test hooks. Points (in pipeline order):

    prepare                  while prepare estimates the budget
    reduce                   as prepare starts its reduce (de-duplicate and split)
    upload-train-before      before the training file's upload request
    upload-train-after       after the training file was uploaded, before the ledger knows it
    upload-validation-after  after the validation file was uploaded, before the ledger knows it
    create-before            before the create-job request
    create-after             after the job was created, before the ledger knows its id
    polling                  while polling the job
    evaluation               while evaluating the new model
    record-before            before the run record is saved
    record-after             after the run record is saved, before the flow run ends
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Any

POINTS = ("prepare", "upload-train-before", "upload-train-after", "upload-validation-after", "create-before",
          "create-after", "polling", "evaluation", "record-before", "record-after")


def die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.Signals["SIG" + os.environ.get("FTFLOW_CHAOS_SIGNAL", "KILL")])


def wrap(owner: Any, name: str, *, before: bool = False, after: bool = False, on_call: int = 1) -> None:
    original: Callable[..., Any] = getattr(owner, name)
    calls = [0]

    def patched(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if before and calls[0] == on_call:
            die()
        try:
            return original(*args, **kwargs)
        finally:  # "after" the request was sent, answered or not (a timeout, a lost response)
            if after and calls[0] == on_call:
                die()

    setattr(owner, name, patched)


def arm(point: str) -> None:
    import tasks.budget
    import tasks.evaluate
    import tasks.jobs
    import tasks.reduce
    from ftflow.providers.openai import OpenAIProvider
    from ftflow.store.lineage import LineageStore

    match point:
        case "prepare":
            wrap(tasks.budget, "estimate", before=True)
        case "reduce":
            wrap(tasks.reduce, "dedup_and_split", before=True)
        case "upload-train-before":
            wrap(OpenAIProvider, "upload_file", before=True)
        case "upload-train-after":
            wrap(OpenAIProvider, "upload_file", after=True)
        case "upload-validation-after":
            wrap(OpenAIProvider, "upload_file", after=True, on_call=2)
        case "create-before":
            wrap(OpenAIProvider, "create_job", before=True)
        case "create-after":
            wrap(OpenAIProvider, "create_job", after=True)
        case "polling":
            wrap(tasks.jobs.EventCursor, "new_events", before=True)
        case "evaluation":
            wrap(tasks.evaluate, "evaluate_model", before=True)
        case "record-before":
            wrap(LineageStore, "save_run", before=True)
        case "record-after":
            wrap(LineageStore, "save_run", after=True)
        case _:
            raise SystemExit(f"unknown kill point {point!r}; known: {', '.join(POINTS)}")


if __name__ == "__main__":
    if point := os.environ.get("FTFLOW_CHAOS_KILL_AT"):
        arm(point)
    from ftflow.cli import main

    sys.argv[0] = "ftflow"
    main()  # the console entry point, which turns SIGTERM into a stop as on Ctrl-C
