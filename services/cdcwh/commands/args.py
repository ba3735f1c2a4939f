"""Argument types and option groups shared by the command modules' parsers."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def add_catch_up(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``--until-caught-up`` and its ``--idle-seconds``, shared by the consuming services."""
    parser.add_argument("--until-caught-up", action="store_true", help=help_text)
    parser.add_argument(
        "--idle-seconds",
        type=positive_float,
        default=1.0,
        help="with --until-caught-up: seconds each partition must stay at its end before exiting (default 1)",
    )
