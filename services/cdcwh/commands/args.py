"""Argument types and option groups shared by the command modules' parsers."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T", int, float)


def _checked(text: str, cast: Callable[[str], T], ok: Callable[[T], bool], rule: str) -> T:
    value = cast(text)
    if not ok(value):  # written so that NaN fails too
        raise argparse.ArgumentTypeError(f"must be {rule}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _checked(text, int, lambda v: v >= 1, ">= 1")


def positive_float(text: str) -> float:
    return _checked(text, float, lambda v: v > 0, "> 0")


def non_negative_int(text: str) -> int:
    return _checked(text, int, lambda v: v >= 0, ">= 0")


def non_negative_float(text: str) -> float:
    return _checked(text, float, lambda v: v >= 0, ">= 0")


def add_catch_up(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``--until-caught-up`` and its ``--idle-seconds``, shared by the consuming services."""
    parser.add_argument("--until-caught-up", action="store_true", help=help_text)
    parser.add_argument(
        "--idle-seconds",
        type=positive_float,
        default=1.0,
        help="with --until-caught-up: seconds each partition must stay at its end before exiting (default 1)",
    )
