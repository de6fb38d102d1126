"""uvicorn on Prefect's server, as ftflow starts it, with a task-run recorder that takes 0.2 s per
write: a slow database, for the test that a temporary server is not stopped before it caught up."""

import asyncio
import sys

import uvicorn.main
from prefect.server.services import task_run_recorder

record = task_run_recorder.record_bulk_task_run_events


async def slow_record(events):
    await asyncio.sleep(0.2)
    await record(events)


task_run_recorder.record_bulk_task_run_events = slow_record
sys.exit(uvicorn.main.main())
