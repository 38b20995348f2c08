"""``python -m supervisor.personas_cli_entry``: the `personas` command without the console script."""

from .personas_cli import main

main()
