"""`python -m ftflow.cli`: the `ftflow` command."""

from ftflow.cli import main

main()
