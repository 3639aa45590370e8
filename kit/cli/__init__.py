"""The `kit` command line. Thin: each command parses options, calls the layers below, and prints.

`base` holds the command group and what commands share; each other module is one family of
commands, registered on the group when it is imported here.
"""

from kit.cli import export, ledger, review, runs, scenarios, store  # noqa: F401  (registers the commands)
from kit.cli.base import cli, main

__all__ = ["cli", "main"]
