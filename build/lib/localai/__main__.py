"""`python -m localai [--host H] [--port N] [--data-dir D]`: the service in the foreground."""

from __future__ import annotations

import argparse
from pathlib import Path

from localai.server import serve_forever


def main() -> None:
    parser = argparse.ArgumentParser(prog="localai", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    serve_forever(host=args.host, port=args.port, data_dir=args.data_dir)


if __name__ == "__main__":
    main()
