"""What a command hands a flow as parameters, which Prefect stores with the run: no database password."""

from __future__ import annotations

import os


def sql_url_parameter(url: str | None) -> str | None:
    """Keep a database password out of flow-run parameters: pass it through the environment."""
    if not url:
        return url
    from tasks.readers.sql import parse_sql_url

    if parse_sql_url(url).password is None:
        return url
    os.environ["FTFLOW_SQL_URL"] = url
    return "env:FTFLOW_SQL_URL"
