"""What the commands print: ``--format table|json|csv``, with every value printed verbatim.

- table: rich tables for people. Every cell, title and header is a ``rich.text.Text``, so a value that
  looks like markup (``[b]x[/b]``, ``x[/]``) is shown as it is instead of being parsed. Output that is not a
  terminal is not cut or wrapped at 80 columns (``make_console()``).
- json: one JSON document on stdout. Exact values: integers of any size as JSON numbers, floats as their
  shortest round-tripping repr, decimals as strings (a JSON number would be read as a binary float by most
  parsers, losing digits), NaN and infinities as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``,
  timestamps, dates and times in ISO 8601, intervals as ISO 8601 durations (``P3DT0S``), bytes as base64.
- csv: RFC 4180 with a header row. A command that reports several tables prints each as a block: a line
  ``# <title>``, the header row, the rows, and a blank line between blocks.
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any, Literal, TextIO
from uuid import UUID

from rich.console import Console
from rich.table import Table
from rich.text import Text

Format = Literal["table", "json", "csv"]
FORMATS: tuple[Format, ...] = ("table", "json", "csv")
PIPE_WIDTH = 100_000
"""The console width when stdout is not a terminal: wide enough that no table is cut, wrapped or squeezed."""


def add_format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        help="table (default, for people), json (one document) or csv (header row first); docs/operations.md",
    )


def make_console(*, stderr: bool = False) -> Console:
    """A console that never interprets markup in what it is given to print and, off a terminal, never cuts
    or wraps at 80 columns (piped tables keep whole amounts on one line)."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else PIPE_WIDTH
    return Console(stderr=stderr, width=width, markup=False, highlight=False, emoji=False)


@dataclass
class Grid:
    """One table of a command's output: for the table and csv formats."""

    title: str
    columns: Sequence[str]
    rows: Sequence[Sequence[object]] = field(default_factory=list)
    right: frozenset[str] = frozenset()
    """Columns aligned right (numbers) in the table format."""


def text(value: object) -> Text:
    """A cell as the table format shows it: verbatim, never markup; numbers with thousands separators."""
    if value is None:
        return Text("-")
    if isinstance(value, bool):
        return Text(str(value).lower())
    if isinstance(value, int):
        return Text(f"{value:,}")
    return Text(plain(value))


def plain(value: object) -> str:
    """A value as one string: ISO 8601 for times, JSON for lists and maps, base64 for bytes."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    converted = jsonable(value)
    if isinstance(converted, list | dict):
        return json.dumps(converted, ensure_ascii=False)
    return converted if isinstance(converted, str) else json.dumps(converted)


def table(grid: Grid) -> Table:
    rendered = Table(title=Text(grid.title) if grid.title else None)
    for column in grid.columns:
        rendered.add_column(Text(column), justify="right" if column in grid.right else "left")
    for row in grid.rows:
        rendered.add_row(*(text(v) for v in row))
    return rendered


def print_tables(grids: Iterable[Grid], out: Console | None = None) -> None:
    out = out or make_console()
    for grid in grids:
        out.print(table(grid))


def write_csv(grids: Sequence[Grid], stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    writer = csv.writer(stream, lineterminator="\n")
    for index, grid in enumerate(grids):
        if len(grids) > 1:
            if index:
                stream.write("\n")
            stream.write(f"# {grid.title}\n")
        writer.writerow(grid.columns)
        for row in grid.rows:
            writer.writerow([plain(v) for v in row])


def write_json(document: object, stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    stream.write(json.dumps(jsonable(document), ensure_ascii=False, allow_nan=False, indent=1))
    stream.write("\n")


def emit(fmt: Format, grids: Sequence[Grid], document: object, out: Console | None = None) -> None:
    """Print a command's result in the chosen format: ``grids`` for table and csv, ``document`` for json."""
    if fmt == "json":
        write_json(document)
    elif fmt == "csv":
        write_csv(grids)
    else:
        print_tables(grids, out)


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types, exactly (see the module docstring); dataclasses become objects."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return iso_duration(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, UUID | Path):
        return str(value)
    if isinstance(value, Enum):
        return jsonable(value.value)
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {plain(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return str(value)


def iso_duration(value: timedelta) -> str:
    """An ISO 8601 duration: days, then seconds with microseconds (``P1DT3600.5S``; negative: ``-P...``)."""
    sign = "-" if value < timedelta(0) else ""
    value = abs(value)
    seconds = Decimal(value.seconds) + Decimal(value.microseconds) / Decimal(1_000_000)
    return f"{sign}P{value.days}DT{seconds.normalize():f}S"
