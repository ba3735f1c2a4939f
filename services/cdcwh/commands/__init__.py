"""Implementations of the cdcwh subcommands; cli.py parses arguments and dispatches here."""
