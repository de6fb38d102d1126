"""`python -m ftflow.cli`: the `ftflow` command."""

from ftflow.cli import main

if __name__ == "__main__":  # importing this module (a package walk, a test) must not run the command
    main()
