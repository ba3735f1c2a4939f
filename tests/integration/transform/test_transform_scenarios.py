"""Targeted transform scenarios on hand-written Debezium changes, through the real broker, the long-running
ingest and ``transform --once`` (both in-process).

One scripted history runs in four rounds (produce -> ingest -> ``transform --once``, one micro-batch each)
and a fifth transform with nothing new, on two data dirs in parallel:

- ``single``: every record delivered once;
- ``dup``: every round's records delivered twice, and the previous round's records delivered again at the
  start of the next round (what a Debezium connector restart does: it re-sends everything after its last
  committed source offset, which here lands in a later micro-batch).

After every round both dirs are snapshotted. Silver must equal the replayed source state, gold must equal the
independent reference of DESIGN section 7 (marts_reference.py), and each batch must publish exactly the rows
that changed between the reference before and after it. The scenario tests then check their keys by hand.

Scenario keys (ids do not overlap between scenarios):
- TOAST: product 1 (two toasted updates in the creating batch), 2 (toasted updates in later batches),
  3 (toasted, then a real description change, then toasted again, in one later batch);
- delete + re-insert: customer 10 / order 100 in one batch, customer 11 / order 101 across batches;
- out-of-order arrival: items 2001, 2002 and payments 3001, 3002 of order 200 a batch before the order;
  item 2011 and payment 3011 before order 201 in the same batch;
- SCD2: customer 20 (segment twice in one batch, then email and a first_name change, then a delete),
  customer 21 (first_name only);
- ``inventory``: a table with a composite key (warehouse_id, sku) that no gold model reads;
- round 4 changes only columns no mart uses (customers/orders/payments ``created_at``); the fifth run has
  nothing new at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from cdcwh.config import Settings
from cdcwh.generate import KafkaRecord, SourceChange, encode, produce, replay_state
from tests.integration.transform.scenario import (
    ChangeScript,
    FeedMessage,
    Landing,
    Row,
    column_types,
    parse_row,
    query,
    read_feed,
    reading,
    run_parallel,
    source_time,
    table_rows,
)
from tests.support.marts_reference import (
    MART_KEYS,
    compare_marts,
    customer_changes_from,
    reference_marts,
)
from tests.support.pipeline import TABLES, settings_for
from tests.support.services import RunningIngest, ingest_running
from tests.support.warehouse import MARTS, run_transform_once

SILVER_TABLES = (*TABLES, "inventory")
META = ("__op", "__source_ts", "__lsn", "__seq")
DAY = date(2026, 2, 27)


def naive(*parts: int) -> datetime:
    """A ``timestamp without time zone`` value (orders.created_at)."""
    return datetime(*parts, tzinfo=UTC).replace(tzinfo=None)


# ---- the inventory table: Debezium JSON written by hand ---------------------------------------------------

INVENTORY_COLUMNS = (
    {"type": "int32", "optional": False, "field": "warehouse_id"},
    {"type": "string", "optional": False, "field": "sku"},
    {"type": "int32", "optional": True, "field": "quantity"},
    {"type": "string", "optional": True, "field": "bin"},
)


def _inventory_value_schema(prefix: str) -> dict[str, Any]:
    row = {
        "type": "struct",
        "fields": list(INVENTORY_COLUMNS),
        "optional": True,
        "name": f"{prefix}.public.inventory.Value",
    }
    source_fields = [
        {"type": "string", "optional": False, "field": "version"},
        {"type": "string", "optional": False, "field": "connector"},
        {"type": "string", "optional": False, "field": "name"},
        {"type": "int64", "optional": False, "field": "ts_ms"},
        {
            "type": "string",
            "optional": True,
            "name": "io.debezium.data.Enum",
            "version": 1,
            "parameters": {"allowed": "true,last,false,incremental"},
            "default": "false",
            "field": "snapshot",
        },
        {"type": "string", "optional": False, "field": "db"},
        {"type": "string", "optional": True, "field": "sequence"},
        {"type": "string", "optional": False, "field": "schema"},
        {"type": "string", "optional": False, "field": "table"},
        {"type": "int64", "optional": True, "field": "txId"},
        {"type": "int64", "optional": True, "field": "lsn"},
        {"type": "int64", "optional": True, "field": "xmin"},
    ]
    return {
        "type": "struct",
        "fields": [
            {**row, "field": "before"},
            {**row, "field": "after"},
            {
                "type": "struct",
                "fields": source_fields,
                "optional": False,
                "name": "io.debezium.connector.postgresql.Source",
                "field": "source",
            },
            {"type": "string", "optional": False, "field": "op"},
            {"type": "int64", "optional": True, "field": "ts_ms"},
        ],
        "optional": False,
        "name": f"{prefix}.public.inventory.Envelope",
        "version": 2,
    }


@dataclass(frozen=True)
class InventoryChange:
    op: str
    warehouse_id: int
    sku: str
    quantity: int | None
    bin: str | None
    lsn: int
    ts_ms: int

    def records(self, prefix: str) -> list[KafkaRecord]:
        topic = f"{prefix}.public.inventory"
        key_schema = {
            "type": "struct",
            "fields": list(INVENTORY_COLUMNS[:2]),
            "optional": False,
            "name": f"{prefix}.public.inventory.Key",
        }
        key = orjson.dumps(
            {"schema": key_schema, "payload": {"warehouse_id": self.warehouse_id, "sku": self.sku}}
        )
        image = {
            "warehouse_id": self.warehouse_id,
            "sku": self.sku,
            "quantity": self.quantity,
            "bin": self.bin,
        }
        payload = {
            # REPLICA IDENTITY DEFAULT: no before image on updates, only the key on deletes
            "before": {**image, "quantity": None, "bin": None} if self.op == "d" else None,
            "after": None if self.op == "d" else image,
            "source": {
                "version": "2.7.3.Final",
                "connector": "postgresql",
                "name": prefix,
                "ts_ms": self.ts_ms,
                "snapshot": "false",
                "db": "shop",
                "sequence": orjson.dumps([str(self.lsn - 32), str(self.lsn)]).decode(),
                "schema": "public",
                "table": "inventory",
                "txId": self.lsn // 64,
                "lsn": self.lsn,
                "xmin": None,
            },
            "op": self.op,
            "ts_ms": self.ts_ms + 7,
        }
        value = orjson.dumps({"schema": _inventory_value_schema(prefix), "payload": payload})
        records = [KafkaRecord(topic, key, value)]
        if self.op == "d":
            records.append(KafkaRecord(topic, key, None))
        return records


# ---- the scripted source history --------------------------------------------------------------------------


@dataclass
class Round:
    changes: list[SourceChange] = field(default_factory=list)
    inventory: list[InventoryChange] = field(default_factory=list)

    def records(self, prefix: str) -> list[KafkaRecord]:
        shop = [r for c in self.changes for r in encode(c, prefix=prefix)]
        return shop + [r for c in self.inventory for r in c.records(prefix)]


def _customer(script: ChangeScript, cid: int, email: str, segment: str, first: str = "Ann") -> SourceChange:
    return script.create(
        "customers",
        id=cid,
        email=email,
        first_name=first,
        last_name=f"Doe{cid}",
        segment=segment,
        country="US",
        created_at=datetime(2025, 12, 1, 8, 30, cid, 123456, tzinfo=UTC),
    )


def _product(script: ChangeScript, pid: int, price: str, description: str) -> SourceChange:
    return script.create(
        "products",
        id=pid,
        sku=f"SKU-{pid:04d}",
        name=f"Product {pid}",
        category="books",
        price=Decimal(price),
        active=True,
        description=description,
    )


def _order(script: ChangeScript, oid: int, customer: int, status: str, day: date) -> SourceChange:
    return script.create(
        "orders",
        id=oid,
        customer_id=customer,
        status=status,
        order_date=day,
        created_at=naive(day.year, day.month, day.day, 9, 15, oid % 60),
    )


def _item(
    script: ChangeScript, iid: int, order: int, product: int, quantity: int, price: str
) -> SourceChange:
    return script.create(
        "order_items",
        id=iid,
        order_id=order,
        product_id=product,
        quantity=quantity,
        unit_price=Decimal(price),
    )


def _payment(script: ChangeScript, pid: int, order: int, method: str, amount: str) -> SourceChange:
    return script.create(
        "payments",
        id=pid,
        order_id=order,
        method=method,
        amount=Decimal(amount),
        created_at=datetime(2026, 2, 27, 10, 0, pid % 60, tzinfo=UTC),
    )


def _inventory(script: ChangeScript, op: str, wid: int, sku: str, qty: int | None = None) -> InventoryChange:
    lsn, ts_ms = script.advance()
    bin_ = None if qty is None else f"A-{wid}-{sku}"
    return InventoryChange(op, wid, sku, qty, bin_, lsn, ts_ms)


LONG_TEXT = "A long description that Postgres stores out of line (TOAST). " * 40


def build_rounds() -> tuple[ChangeScript, list[Round], dict[str, SourceChange]]:
    """The scripted history; ``marks`` names the changes whose commit times the SCD2 test checks."""
    s = ChangeScript()
    marks: dict[str, SourceChange] = {}
    r0, r1, r2, r3 = Round(), Round(), Round(), Round()

    # round 0
    c = r0.changes
    c.append(_customer(s, 12, "owner@example.com", "consumer"))
    c.append(_customer(s, 10, "ten-a@example.com", "consumer"))
    c.append(s.delete("customers", 10))
    c.append(_customer(s, 10, "ten-b@example.com", "corporate", first="Ben"))
    c.append(_customer(s, 11, "eleven-a@example.com", "home_office"))
    c.append(_customer(s, 21, "twentyone@example.com", "consumer"))
    c.append(_product(s, 1, "10.00", "one: " + LONG_TEXT))
    c.append(s.update("products", 1, toasted={"description"}, price=Decimal("11.00")))
    c.append(s.update("products", 1, toasted={"description"}, price=Decimal("12.00")))
    c.append(_product(s, 2, "5.50", "two: " + LONG_TEXT))
    c.append(_product(s, 3, "7.00", "three-a"))
    c.append(_order(s, 100, 12, "placed", DAY))
    c.append(_item(s, 1001, 100, 2, 3, "2.00"))
    c.append(s.delete("orders", 100))
    c.append(_order(s, 100, 12, "shipped", date(2026, 2, 28)))
    c.append(_payment(s, 3100, 100, "bank_transfer", "6.00"))
    c.append(_order(s, 101, 12, "completed", DAY))
    # order 200 arrives a batch later than its items and payments
    c.append(_item(s, 2001, 200, 1, 2, "12.00"))
    c.append(_item(s, 2002, 200, 2, 1, "5.50"))
    c.append(_payment(s, 3001, 200, "credit_card", "10.00"))
    c.append(_payment(s, 3002, 200, "coupon", "3.50"))
    # order 201 arrives after its item and payment in the same batch
    c.append(_item(s, 2011, 201, 3, 4, "7.00"))
    c.append(_payment(s, 3011, 201, "gift_card", "7.25"))
    c.append(_order(s, 201, 21, "completed", date(2026, 3, 1)))
    # SCD2: three versions of customer 20 in one batch
    c.append(marks.setdefault("c20_create", _customer(s, 20, "twenty@example.com", "consumer")))
    c.append(marks.setdefault("c20_seg1", s.update("customers", 20, segment="corporate")))
    c.append(marks.setdefault("c20_seg2", s.update("customers", 20, segment="home_office")))
    r0.inventory += [
        _inventory(s, "c", 1, "A", 5),
        _inventory(s, "c", 1, "B", 3),
        _inventory(s, "c", 2, "A", 7),
        _inventory(s, "u", 2, "A", 8),
    ]

    # round 1
    c = r1.changes
    c.append(s.delete("customers", 11))
    c.append(s.update("customers", 20, first_name="Zoe"))
    c.append(marks.setdefault("c20_email", s.update("customers", 20, email="twenty-new@example.com")))
    c.append(s.update("customers", 21, first_name="Tia"))
    c.append(s.update("products", 2, toasted={"description"}, price=Decimal("6.00")))
    c.append(s.update("products", 3, toasted={"description"}, price=Decimal("7.50")))
    c.append(s.update("products", 3, description="three-b"))
    c.append(s.update("products", 3, toasted={"description"}, active=False))
    c.append(s.delete("orders", 101))
    c.append(_order(s, 200, 12, "placed", DAY))
    r1.inventory += [_inventory(s, "u", 1, "A", 6), _inventory(s, "d", 1, "B")]

    # round 2
    c = r2.changes
    c.append(_customer(s, 11, "eleven-b@example.com", "corporate", first="Eli"))
    c.append(marks.setdefault("c20_delete", s.delete("customers", 20)))
    c.append(s.update("products", 2, toasted={"description"}, price=Decimal("6.25")))
    c.append(_order(s, 101, 12, "returned", date(2026, 2, 26)))

    # round 3: only columns no mart reads
    c = r3.changes
    c.append(s.update("customers", 12, created_at=datetime(2025, 11, 30, 23, 59, 59, tzinfo=UTC)))
    c.append(s.update("orders", 200, created_at=naive(2026, 2, 27, 23, 0, 0)))
    c.append(s.update("payments", 3001, created_at=datetime(2026, 2, 28, 0, 0, 1, tzinfo=UTC)))
    return s, [r0, r1, r2, r3], marks


# ---- running it -------------------------------------------------------------------------------------------


@dataclass
class Snapshot:
    silver: dict[str, list[Row]]
    history: dict[str, list[Row]]
    gold: dict[str, list[Row]]
    batches: list[Row]
    outbox: int


@dataclass
class Run:
    single: Settings
    dup: Settings
    rounds: list[Round]
    marks: dict[str, SourceChange]
    single_snapshots: list[Snapshot]
    dup_snapshots: list[Snapshot]
    feed: dict[str, list[FeedMessage]]

    def changes_until(self, round_index: int) -> list[SourceChange]:
        return [c for r in self.rounds[: round_index + 1] for c in r.changes]

    def reference(self, round_index: int) -> dict[str, list[Row]]:
        changes = self.changes_until(round_index)
        return reference_marts(replay_state(changes), customer_changes_from(changes))

    def gold(self, round_index: int, mart: str) -> dict[tuple[Any, ...], Row]:
        rows = self.single_snapshots[round_index].gold[mart]
        return {tuple(r[k] for k in MART_KEYS[mart]): r for r in rows}

    def silver(self, round_index: int, table: str) -> dict[Any, Row]:
        return {r["id"]: r for r in self.single_snapshots[round_index].silver[table]}

    def published(self, round_index: int) -> list[FeedMessage]:
        """The gold changes published by the batches of one round (``cdcwh.batches`` has their versions)."""
        before = self.single_snapshots[round_index - 1].batches if round_index else []
        new = {b["version"] for b in self.single_snapshots[round_index].batches} - {
            b["version"] for b in before
        }
        return [m for messages in self.feed.values() for m in messages if m.version in new]


def snapshot(settings: Settings) -> Snapshot:
    with reading(settings) as con:
        return Snapshot(
            silver={t: table_rows(settings, f"silver.{t}", ["__seq"], con) for t in SILVER_TABLES},
            history={t: table_rows(settings, f"silver_history.{t}", ["__seq"], con) for t in SILVER_TABLES},
            gold={m: table_rows(settings, f"gold.{m}", ["_updated_at"], con) for m in MARTS},
            batches=query(
                settings,
                "SELECT * EXCLUDE (started_at, ended_at) FROM cdcwh.batches ORDER BY batch_id",
                con,
            ),
            outbox=int(query(settings, "SELECT count(*) AS n FROM cdcwh.outbox", con)[0]["n"]),
        )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[Run]:
    base = tmp_path_factory.mktemp("scenarios")
    tag = uuid.uuid4().hex[:6]  # fresh topics even on a long-lived external broker
    one, two = f"scn{tag}a", f"scn{tag}b"
    single = settings_for(base / "single", kafka_bootstrap, one)
    dup = settings_for(base / "dup", kafka_bootstrap, two)
    _, rounds, marks = build_rounds()
    producer = {"bootstrap.servers": kafka_bootstrap}
    result = Run(single, dup, rounds, marks, [], [], {})
    landing = {one: Landing(single), two: Landing(dup)}
    with ExitStack() as services:
        ingest: dict[str, RunningIngest] = {}
        for index, current in enumerate(rounds):
            redelivered = rounds[index - 1].records(two) if index else []
            batches = [
                landing[one].add(current.records(one)),
                landing[two].add(redelivered + current.records(two) * 2),
            ]
            run_parallel(lambda records: produce(records, producer_config=producer, partitions=3), batches)
            if not ingest:  # started once every topic exists
                for name, settings in ((one, single), (two, dup)):
                    ingest[name] = services.enter_context(ingest_running(settings))
            for name in ingest:
                landing[name].wait(ingest[name])
            run_parallel(run_transform_once, [single, dup])
            snapshots = run_parallel(snapshot, [single, dup])
            result.single_snapshots.append(snapshots[0])
            result.dup_snapshots.append(snapshots[1])
        for running in ingest.values():
            running.stop()
        # a fifth run with nothing new in bronze
        run_parallel(run_transform_once, [single, dup])
        snapshots = run_parallel(snapshot, [single, dup])
        result.single_snapshots.append(snapshots[0])
        result.dup_snapshots.append(snapshots[1])
    result.feed = read_feed(kafka_bootstrap, single.kafka.gold_topic_prefix)
    yield result


# ---- every round: silver, gold and the published changes ---------------------------------------------------


def test_every_batch_matches_the_source_and_publishes_exactly_what_changed(run: Run) -> None:
    types = {mart: column_types(run.single, f"gold.{mart}") for mart in MARTS}
    previous: dict[str, list[Row]] = {mart: [] for mart in MARTS}
    for index in range(len(run.rounds)):
        snap = run.single_snapshots[index]
        assert [b["status"] for b in snap.batches] == ["ok"] * (index + 1), "one batch per round"
        assert snap.outbox == 0
        state = replay_state(run.changes_until(index))
        for table in TABLES:
            silver = {r["id"]: {k: v for k, v in r.items() if k not in META} for r in snap.silver[table]}
            assert silver == {key[0]: row for key, row in state[table].items()}, (index, table)
        expected = run.reference(index)
        assert compare_marts(snap.gold, expected) == [], index

        want: dict[tuple[str, tuple[Any, ...]], tuple[str, Row | None]] = {}
        for mart in MARTS:
            old = {tuple(r[k] for k in MART_KEYS[mart]): r for r in previous[mart]}
            new = {tuple(r[k] for k in MART_KEYS[mart]): r for r in expected[mart]}
            want.update({(mart, k): ("upsert", row) for k, row in new.items() if old.get(k) != row})
            want.update({(mart, k): ("delete", None) for k in old.keys() - new.keys()})
        got: dict[tuple[str, tuple[Any, ...]], tuple[str, Row | None]] = {}
        for message in run.published(index):
            mart = message.mart
            key = tuple(parse_row(types[mart], message.value["key"]).values())
            assert (mart, key) not in got, f"round {index}: {mart} {key} published twice in one batch"
            row = message.value["row"]
            got[mart, key] = (message.value["op"], None if row is None else parse_row(types[mart], row))
        assert got == want, f"round {index}"
        previous = expected


# ---- 1. TOAST ---------------------------------------------------------------------------------------------


def test_toast_placeholder_keeps_the_previous_description(run: Run) -> None:
    after_first = run.silver(0, "products")
    assert after_first[1]["price"] == Decimal("12.00")
    assert after_first[1]["description"] == "one: " + LONG_TEXT
    for index in (1, 2, 4):
        products = run.silver(index, "products")
        assert products[1]["description"] == "one: " + LONG_TEXT
        assert products[2]["description"] == "two: " + LONG_TEXT
        assert products[3]["description"] == "three-b"
        dim = run.gold(index, "dim_products")
        assert {pid: dim[(pid,)]["description"] for pid in (1, 2, 3)} == {
            1: "one: " + LONG_TEXT,
            2: "two: " + LONG_TEXT,
            3: "three-b",
        }
    assert run.silver(1, "products")[2]["price"] == Decimal("6.00")
    final = run.gold(4, "dim_products")
    assert (final[(2,)]["price"], final[(3,)]["price"], final[(3,)]["active"]) == (
        Decimal("6.25"),
        Decimal("7.50"),
        False,
    )
    assert "__debezium_unavailable_value" not in repr(run.single_snapshots[4].silver["products"])
    assert "__debezium_unavailable_value" not in repr(run.single_snapshots[4].history["products"])


# ---- 2. delete, then re-insert ----------------------------------------------------------------------------


def test_delete_then_reinsert_in_one_batch_and_across_batches(run: Run) -> None:
    first = run.silver(0, "customers")
    assert (first[10]["email"], first[10]["first_name"], first[10]["segment"]) == (
        "ten-b@example.com",
        "Ben",
        "corporate",
    )
    assert run.silver(0, "orders")[100]["status"] == "shipped"
    assert run.gold(0, "orders")[(100,)]["order_date"] == date(2026, 2, 28)
    assert run.gold(0, "orders")[(100,)]["bank_transfer_amount"] == Decimal("6.00")
    # order 100's item survives the order's delete/re-insert and follows the new order date
    assert run.gold(0, "fact_order_items")[(1001,)]["order_date"] == date(2026, 2, 28)

    assert 11 in run.silver(0, "customers") and 101 in run.silver(0, "orders")
    assert 11 not in run.silver(1, "customers") and 101 not in run.silver(1, "orders")
    assert (11,) not in run.gold(1, "customers") and (101,) not in run.gold(1, "orders")
    assert run.silver(2, "customers")[11]["email"] == "eleven-b@example.com"
    assert run.gold(2, "customers")[(11,)]["first_name"] == "Eli"
    assert run.gold(2, "orders")[(101,)]["status"] == "returned"

    dim = run.gold(4, "dim_customers")
    ten = [dim[k] for k in sorted(k for k in dim if k[0] == 10)]
    assert [(r["version"], r["email"], r["is_current"]) for r in ten] == [
        (1, "ten-a@example.com", False),
        (2, "ten-b@example.com", True),
    ]
    eleven = [dim[k] for k in sorted(k for k in dim if k[0] == 11)]
    assert [(r["version"], r["email"], r["segment"], r["is_current"]) for r in eleven] == [
        (1, "eleven-a@example.com", "home_office", False),
        (2, "eleven-b@example.com", "corporate", True),
    ]
    assert eleven[0]["valid_to"] is not None and eleven[0]["valid_to"] < eleven[1]["valid_from"]


# ---- 3. duplicate delivery --------------------------------------------------------------------------------


def test_duplicate_delivery_gives_the_same_silver_and_gold(run: Run) -> None:
    for index, (single, dup) in enumerate(zip(run.single_snapshots, run.dup_snapshots, strict=True)):
        for table in SILVER_TABLES:
            assert dup.silver[table] == single.silver[table], (index, table)
            # the changelog holds each source change once, however often it was delivered
            assert dup.history[table] == single.history[table], (index, table)
        for mart in MARTS:
            strip = [{k: v for k, v in r.items() if k != "_version"} for r in dup.gold[mart]]
            want = [{k: v for k, v in r.items() if k != "_version"} for r in single.gold[mart]]
            assert strip == want, (index, mart)
        assert dup.outbox == 0
    # the redelivered rounds really were delivered: bronze of dup holds more rows than single's
    assert sum(b["bronze_rows"] for b in run.dup_snapshots[-1].batches) > 2 * sum(
        b["bronze_rows"] for b in run.single_snapshots[-1].batches
    )


# ---- 4. out-of-order arrival across topics ----------------------------------------------------------------


def test_items_and_payments_before_their_order(run: Run) -> None:
    assert {2001, 2002} <= run.silver(0, "order_items").keys()
    assert {3001, 3002} <= run.silver(0, "payments").keys()
    fact = run.gold(0, "fact_order_items")
    assert (2001,) not in fact and (2002,) not in fact
    assert (200,) not in run.gold(0, "orders")
    # same batch: the order arrived after its item and payment, and they count
    assert fact[(2011,)]["customer_id"] == 21 and fact[(2011,)]["line_amount"] == Decimal("28.00")
    assert run.gold(0, "orders")[(201,)]["gift_card_amount"] == Decimal("7.25")

    fact = run.gold(1, "fact_order_items")
    late = {
        k: (r["order_id"], r["customer_id"], r["order_date"], r["status"], r["line_amount"])
        for k, r in fact.items()
        if k[0] in (2001, 2002)
    }
    assert late == {
        (2001,): (200, 12, DAY, "placed", Decimal("24.00")),
        (2002,): (200, 12, DAY, "placed", Decimal("5.50")),
    }
    order = run.gold(1, "orders")[(200,)]
    assert (
        order["credit_card_amount"],
        order["coupon_amount"],
        order["gift_card_amount"],
        order["amount"],
    ) == (
        Decimal("10.00"),
        Decimal("3.50"),
        Decimal("0.00"),
        Decimal("13.50"),
    )
    revenue = run.gold(1, "daily_revenue")[(DAY,)]
    assert (revenue["orders"], revenue["items_sold"], revenue["revenue"]) == (1, 3, Decimal("29.50"))


# ---- 5. SCD2 ----------------------------------------------------------------------------------------------


def test_dim_customers_versions(run: Run) -> None:
    t = {name: source_time(change.ts_ms) for name, change in run.marks.items()}

    def versions(index: int, customer: int) -> list[tuple[Any, ...]]:
        dim = run.gold(index, "dim_customers")
        return [
            (r["version"], r["email"], r["segment"], r["valid_from"], r["valid_to"], r["is_current"])
            for k, r in sorted(dim.items())
            if k[0] == customer
        ]

    old, new = "twenty@example.com", "twenty-new@example.com"
    v1 = (1, old, "consumer", t["c20_create"], t["c20_seg1"])
    v2 = (2, old, "corporate", t["c20_seg1"], t["c20_seg2"])
    assert versions(0, 20) == [(*v1, False), (*v2, False), (3, old, "home_office", t["c20_seg2"], None, True)]
    v3 = (3, old, "home_office", t["c20_seg2"], t["c20_email"], False)
    # the first_name change of the same batch started no version
    assert versions(1, 20) == [
        (*v1, False),
        (*v2, False),
        v3,
        (4, new, "home_office", t["c20_email"], None, True),
    ]
    assert run.gold(1, "customers")[(20,)]["first_name"] == "Zoe"
    final = [(*v1, False), (*v2, False), v3, (4, new, "home_office", t["c20_email"], t["c20_delete"], False)]
    assert versions(2, 20) == final
    assert versions(4, 20) == final
    # a first_name-only change: marts.customers changes, dim_customers does not
    assert versions(1, 21) == versions(0, 21) and len(versions(0, 21)) == 1
    published = {(m.mart, m.key_text) for m in run.published(1)}
    assert ("customers", '{"customer_id":21}') in published
    assert not any(mart == "dim_customers" and '"customer_id":21,' in key for mart, key in published)


# ---- 6. a composite-key table no gold model reads ---------------------------------------------------------


def test_composite_key_table_without_gold_model(run: Run) -> None:
    def rows(index: int) -> list[tuple[Any, ...]]:
        silver = run.single_snapshots[index].silver["inventory"]
        return sorted((r["warehouse_id"], r["sku"], r["quantity"], r["bin"]) for r in silver)

    assert rows(0) == [(1, "A", 5, "A-1-A"), (1, "B", 3, "A-1-B"), (2, "A", 8, "A-2-A")]
    assert rows(1) == [(1, "A", 6, "A-1-A"), (2, "A", 8, "A-2-A")]
    assert rows(4) == rows(1)
    history = run.single_snapshots[4].history["inventory"]
    expected = [c for r in run.rounds for c in r.inventory]
    assert sorted((r["__lsn"], r["warehouse_id"], r["sku"], r["__op"]) for r in history) == [
        (c.lsn, c.warehouse_id, c.sku, c.op) for c in expected
    ]
    for row in history:
        change = next(c for c in expected if c.lsn == row["__lsn"])
        assert row["__source_ts"] == source_time(change.ts_ms)
        if change.op != "d":
            assert (row["quantity"], row["bin"]) == (change.quantity, change.bin)
    assert query(run.single, "SELECT key_columns FROM cdcwh.silver_tables WHERE name = 'inventory'") == [
        {"key_columns": ["warehouse_id", "sku"]}
    ]
    assert not any("inventory" in mart for mart in run.feed)
    gold_tables = query(run.single, "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'gold'")
    assert sorted(r["table_name"] for r in gold_tables) == sorted(MARTS)


# ---- 7. batches that change nothing publish nothing -------------------------------------------------------


def test_batches_without_mart_changes_publish_nothing(run: Run) -> None:
    before, unused, idle = run.single_snapshots[2], run.single_snapshots[3], run.single_snapshots[4]
    # round 3 changed only created_at columns: silver moved, no mart did
    assert run.silver(3, "customers")[12]["created_at"] == datetime(2025, 11, 30, 23, 59, 59, tzinfo=UTC)
    assert run.silver(3, "orders")[200]["created_at"] == naive(2026, 2, 27, 23, 0, 0)
    last = unused.batches[-1]
    assert (last["status"], last["bronze_rows"], last["gold_changes"]) == ("ok", 3, 0)
    assert unused.gold == before.gold
    assert run.published(3) == []
    # the fifth run found nothing new: no batch, no outbox row, no message
    assert idle.batches == unused.batches
    assert idle.gold == unused.gold and idle.silver == unused.silver
    assert idle.outbox == 0 and run.published(4) == []
    highest = max(m.version for messages in run.feed.values() for m in messages)
    assert highest == before.batches[-1]["version"]
    # nothing was published twice either: one message per gold change the batches recorded
    messages = [(m.mart, m.key_text, m.version) for ms in run.feed.values() for m in ms]
    assert len(messages) == len(set(messages)) == sum(b["gold_changes"] for b in idle.batches)
    # and round 1 published nothing for marts its changes do not reach
    assert {m.mart for m in run.published(1)} == {
        "customers",
        "dim_customers",
        "dim_products",
        "orders",
        "fact_order_items",
        "daily_revenue",
    }
