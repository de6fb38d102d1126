"""What ftflow adds to Prefect's run logs: task finish lines that name their task.

Prefect logs "Finished in state Completed()" for every task; in the flow run's log that line
does not say which task finished. The filter rewrites it to "check-unchanged finished in state
Completed()". Installed once, when the flows are imported.
"""

from __future__ import annotations

import logging
from typing import Any

FINISHED = "Finished in state "


class NameFinishedTasks(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        name = getattr(record, "task_name", None)
        if name and isinstance(record.msg, str) and record.msg.startswith(FINISHED):
            record.msg = f"{name} finished in state {record.msg[len(FINISHED):]}"
        return True


def name_finished_tasks(logger: Any = None) -> None:
    logger = logger or logging.getLogger("prefect.task_runs")
    if not any(isinstance(f, NameFinishedTasks) for f in logger.filters):
        logger.addFilter(NameFinishedTasks())
