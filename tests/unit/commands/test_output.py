"""``--format``: values printed verbatim (never markup), exactly in JSON, one CSV block per table."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from uuid import UUID

from rich.console import Console

from cdcwh.commands.output import Grid, jsonable, print_tables, write_csv, write_json

MARKUP = ["x[/]", "[b]abc[/b]", "[bold red]not a style[/]", "pip install 'cdcwh[debezium]'"]


def test_json_values_are_exact() -> None:
    big = 2**100 + 1
    document = {
        "decimal": Decimal("12345678901234567890.0000000001"),
        "big": big,
        "float": 0.1,
        "nan": float("nan"),
        "inf": float("-inf"),
        "ts": datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
        "date": date(2026, 1, 2),
        "interval": timedelta(days=3, seconds=1, microseconds=500_000),
        "bytes": b"\x00\xff",
        "uuid": UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        "markup": MARKUP,
    }
    out = io.StringIO()
    write_json(document, out)
    parsed = json.loads(out.getvalue())
    assert Decimal(parsed["decimal"]) == document["decimal"]
    assert parsed["big"] == big and parsed["float"] == 0.1
    assert parsed["nan"] == "NaN" and parsed["inf"] == "-Infinity"
    assert datetime.fromisoformat(parsed["ts"]) == document["ts"]
    assert date.fromisoformat(parsed["date"]) == document["date"]
    assert parsed["interval"] == "P3DT1.5S"
    assert parsed["bytes"] == "AP8="
    assert UUID(parsed["uuid"]) == document["uuid"]
    assert parsed["markup"] == MARKUP


def test_tables_show_markup_verbatim_and_are_not_cut() -> None:
    long_value = "9" * 150
    console = Console(record=True, width=10_000, file=io.StringIO())
    print_tables([Grid("[b]title[/b]", ["[i]col[/i]", "value"], [[m, long_value] for m in MARKUP])], console)
    text = console.export_text()
    for value in [*MARKUP, "[b]title[/b]", "[i]col[/i]", long_value]:
        assert value in text


def test_csv_blocks_parse_back() -> None:
    grids = [
        Grid("first", ["a", "b"], [[MARKUP[0], Decimal("1.50")], ["x,y", None]]),
        Grid("second", ["n"], [[1_000_000]]),
    ]
    out = io.StringIO()
    write_csv(grids, out)
    blocks = out.getvalue().split("\n\n")
    assert [b.splitlines()[0] for b in blocks] == ["# first", "# second"]
    first = list(csv.reader(io.StringIO(blocks[0].split("\n", 1)[1])))
    assert first == [["a", "b"], [MARKUP[0], "1.50"], ["x,y", ""]]
    assert list(csv.reader(io.StringIO(blocks[1].split("\n", 1)[1]))) == [["n"], ["1000000"]]


def test_dataclasses_become_objects() -> None:
    from cdcwh.overview.status import Part

    assert jsonable([Part("kafka", False, "down [x]")]) == [
        {"name": "kafka", "reachable": False, "error": "down [x]"}
    ]
