"""`python -m localai [--host H] [--port N] [--data-dir D] [--max-running-jobs N] [--daily-job-limit N]`."""

from __future__ import annotations

import argparse
from pathlib import Path

from localai.config import ServiceConfig
from localai.server import serve_forever


def main() -> None:
    parser = argparse.ArgumentParser(prog="localai", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--max-running-jobs", type=int, default=None, help="jobs running at once; more wait queued")
    parser.add_argument("--daily-job-limit", type=int, default=None, help="jobs per model and 24 hours")
    args = parser.parse_args()
    given = {"data_dir": args.data_dir, "max_running_jobs": args.max_running_jobs,
             "daily_job_limit": args.daily_job_limit}
    serve_forever(host=args.host, port=args.port,
                  config=ServiceConfig(**{name: value for name, value in given.items() if value is not None}))


if __name__ == "__main__":
    main()
