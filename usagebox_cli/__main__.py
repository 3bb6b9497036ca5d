"""Allows ``python -m usagebox_cli``."""

from usagebox_cli.cli import main

main()
