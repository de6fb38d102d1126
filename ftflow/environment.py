"""Prefect defaults ftflow applies for itself, unless the user set them.

- `PREFECT_HOME`: `.ftflow/prefect` under the working directory, so Prefect's database sits
  next to ftflow's runs and registry instead of in `~/.prefect`;
- analytics and telemetry off: the machines are offline, and the telemetry heartbeat writing
  to the embedded SQLite database prints `database is locked` tracebacks;
- two minutes, not twenty seconds, for the temporary server to start on a busy machine.

They must be in the environment before Prefect reads its settings (on `import prefect`), so
`ftflow`, `flows` and `tasks` apply them on import; a process that imported Prefect earlier
(a Prefect worker, say) keeps its own.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
    "PREFECT_TELEMETRY_ENABLE_RESOURCE_METRICS": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def prefect_defaults(environ: dict[str, str] | os._Environ[str], cwd: Path) -> dict[str, str]:
    """The variables to add: only those the user has not set."""
    wanted = {"PREFECT_HOME": str(cwd / ".ftflow" / "prefect"), **DEFAULTS}
    return {name: value for name, value in wanted.items() if name not in environ}


def apply_prefect_defaults() -> None:
    defaults = prefect_defaults(os.environ, Path.cwd())
    if "PREFECT_HOME" in defaults:  # Prefect creates its home without parents, and warns when it cannot
        Path(defaults["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ.update(defaults)
