"""Entry point for `python -m model_export`."""

from model_export.cli import main

main()
