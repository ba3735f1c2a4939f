"""``cdcwh demo``: the local default end to end.

Starts the embedded broker and Postgres (unless configured), runs ingest, transform and sink under the
supervisor, produces the shop workload while showing live progress read from the services' own /metrics,
then brings everything to the end of the topics, checks that PostgreSQL holds exactly the gold marts, and
prints a summary. ``--keep-running`` leaves it all up (metrics exposed) until Ctrl-C.

With a real source (``--source postgres``, or ``auto`` where Java 17+ and the ``debezium`` extra are there),
it also starts the embedded source PostgreSQL (unless ``CDCWH_SOURCE__DSN`` is set) and capture (the Debezium
engine) as a supervised child, runs the workload as SQL transactions against the source instead of producing
simulated events, waits until capture has emitted every change (the replication slot has confirmed the WAL
written up to the end of the workload), and at the end compares the source with silver (``cdcwh reconcile``).
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from confluent_kafka.admin import AdminClient
from rich.live import Live
from rich.table import Table

from cdcwh.commands import generate
from cdcwh.commands.args import positive_float, positive_int
from cdcwh.commands.output import Format, Grid, add_format_option, emit, make_console
from cdcwh.commands.run import child_env, infrastructure
from cdcwh.config import Settings
from cdcwh.embedded import postgres_dsn
from cdcwh.errors import ConfigError, InfrastructureError
from cdcwh.generate import SHOP_TABLES
from cdcwh.kafka import client_config, ensure_topics
from cdcwh.metrics import Samples, metrics_port
from cdcwh.metrics import scrape as scrape_metrics
from cdcwh.redaction import redact_dsn
from cdcwh.source import CaptureUnavailable, capture_available
from cdcwh.supervisor import CAPTURE, SERVICES, WITH_CAPTURE, Supervisor, run_until_caught_up

console = make_console()


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser(
        "demo",
        help="start the embedded services, generate a shop workload and run the pipeline on it",
        description="The local default end to end on embedded services: a real source PostgreSQL captured "
        "by the Debezium engine where Java 17+ is there (--source), else the Debezium simulator.",
    )
    demo.add_argument("--events", type=positive_int, default=20_000, help="change events (default 20000)")
    demo.add_argument(
        "--rate", type=positive_float, default=None, help="events per second (default: no limit)"
    )
    demo.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    demo.add_argument(
        "--keep-running", action="store_true", help="leave the pipeline and its metrics up until Ctrl-C"
    )
    demo.add_argument(
        "--source",
        choices=("auto", "postgres", "simulator"),
        default="auto",
        help="postgres: run the workload as SQL in a real source PostgreSQL captured by the Debezium engine "
        "(Java 17+ and the debezium extra), then reconcile the source with silver; simulator: produce "
        "simulated Debezium events; auto (default): postgres where capture can run, else the simulator",
    )
    add_format_option(demo)
    demo.set_defaults(handler=run)


CAPTURE_START_TIMEOUT_S = 180.0
"""The JVM's start and the connector's snapshot of a fresh source, until its replication slot is streaming."""
CAPTURE_END_TIMEOUT_S = 300.0
"""After the workload: until the slot has confirmed every change (each one produced and acknowledged)."""
CAPTURE_MAX_EXITS = 3
"""Capture exits (the supervisor restarts it) after which the demo gives up and shows its log."""


def scrape(settings: Settings, service: str) -> Samples:
    """One service's /metrics; empty when it is not answering (yet) or metrics are off."""
    port = metrics_port(settings, service)
    return {} if port == 0 else scrape_metrics(settings.metrics.host, port, timeout_s=1.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(
        v for labels_, v in samples.get(name, []) if all(labels_.get(k) == x for k, x in labels.items())
    )


def silver_applied(samples: Samples) -> float:
    rows = samples.get("cdcwh_transform_rows_total", [])
    return sum(
        v for labels, v in rows if labels.get("direction") == "out" and labels["model"].startswith("silver.")
    )


def quantile(samples: Samples, stage: str, q: float) -> float | None:
    """Upper bound of the histogram bucket holding quantile ``q`` of cdcwh_freshness_seconds{stage}."""
    buckets = sorted(
        (float(labels["le"]), v)
        for labels, v in samples.get("cdcwh_freshness_seconds_bucket", [])
        if labels.get("stage") == stage
    )
    if not buckets or buckets[-1][1] == 0:
        return None
    target = q * buckets[-1][1]
    return next((le for le, count in buckets if count >= target), None)


def progress_table(settings: Settings, produced: int, target: int, *, source: bool = False) -> Table:
    ingest, transform, sink = (scrape(settings, s) for s in ("ingest", "transform", "sink"))
    title = "cdcwh demo: PostgreSQL -> Debezium engine -> cdcwh" if source else "cdcwh demo"
    table = Table(title=title, show_header=True)
    for column in ("stage", "count", "freshness p50 / p99 (s)"):
        table.add_column(column, justify="right" if column != "stage" else "left")

    def fresh(samples: Samples, stage: str) -> str:
        p50, p99 = quantile(samples, stage, 0.5), quantile(samples, stage, 0.99)
        return "-" if p50 is None else f"<= {p50:g} / <= {p99:g}"

    if source:
        captured = total(scrape(settings, CAPTURE), "cdcwh_capture_events_total")
        table.add_row("changes committed to the source", f"{produced:,} / {target:,}", "")
        table.add_row("records captured by Debezium", f"{int(captured):,}", "")
    else:
        table.add_row("change events generated", f"{produced:,} / {target:,}", "")
    table.add_row(
        "landed in bronze", f"{int(total(ingest, 'cdcwh_events_landed_total')):,}", fresh(ingest, "bronze")
    )
    table.add_row("quarantined", f"{int(total(ingest, 'cdcwh_events_quarantined_total')):,}", "")
    table.add_row(
        "applied to silver",
        f"{int(silver_applied(transform)):,}",
        fresh(transform, "gold"),
    )
    table.add_row(
        "mart rows sunk to Postgres",
        f"{int(total(sink, 'cdcwh_sink_rows_total')):,}",
        fresh(sink, "postgres"),
    )
    return table


@dataclass(frozen=True)
class RealSource:
    """The source database the demo writes its workload into, and the slot its capture streams from."""

    dsn: str
    slot: str


def use_real_source(args: argparse.Namespace, settings: Settings) -> bool:
    """``--source``: postgres (capture must be possible), simulator, or auto (postgres where possible)."""
    choice = getattr(args, "source", "auto")
    if choice == "simulator":
        return False
    available, reason = capture_available()
    if choice == "postgres":
        if not available:
            raise CaptureUnavailable(f"--source postgres: capture cannot run here: {reason}")
        return True
    if not available:
        console.print(
            f"capturing a real PostgreSQL needs Java 17+ and the debezium extra: {reason}; "
            "using the Debezium simulator instead",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )
        return False
    if settings.source.dsn is None and holds_simulator_run(settings):
        console.print(
            f"{settings.data_dir} holds a simulator demo (a warehouse but no source database), which the "
            "source would not reconcile with: using the simulator again; `make clean` or another "
            "CDCWH_DATA_DIR captures a real PostgreSQL",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )
        return False
    return True


def holds_simulator_run(settings: Settings) -> bool:
    """A warehouse file without an embedded source cluster: the data dir of an earlier simulator demo."""
    has_source = (settings.data_dir / "source" / "pgdata" / "PG_VERSION").exists()
    return not has_source and (settings.data_dir / "warehouse.duckdb").exists()


def run(args: argparse.Namespace, settings: Settings) -> int:
    global console
    if args.format != "table":  # stdout carries the summary document only; progress goes to stderr
        console = make_console(stderr=True)
    real = use_real_source(args, settings)
    if real and args.source == "postgres" and settings.source.dsn is None and holds_simulator_run(settings):
        raise ConfigError(
            f"{settings.data_dir} holds a simulator demo (a warehouse but no source database): its silver "
            "would never equal the source; use another CDCWH_DATA_DIR, or `make clean`"
        )
    with infrastructure(settings, source=real):
        env = child_env(settings)
        source = real_source(settings) if real else None
        # create the source topics first, so ingest subscribes at once instead of at its next topic refresh
        ensure_topics(AdminClient(client_config(settings)), [f"shop.public.{t}" for t in SHOP_TABLES], 3)
        supervisor = Supervisor(settings.data_dir / "logs", env, WITH_CAPTURE if real else SERVICES)
        supervisor.start()
        counts: dict[str, int] = {}
        failure: list[BaseException] = []
        freshness: dict[float, float | None] = {}
        try:
            wait_until_consuming(settings, supervisor)
            if source is not None:
                wait_until_streaming(supervisor, source)
            done = threading.Event()

            def produce() -> None:
                try:
                    if source is None:
                        generate.produce_workload(
                            settings, events=args.events, seed=args.seed, rate=args.rate, counts=counts
                        )
                    else:
                        from cdcwh.generate.sql_workload import apply_workload

                        def progress(applied: int) -> None:
                            counts["applied"] = applied

                        apply_workload(
                            source.dsn,
                            events=args.events,
                            seed=args.seed,
                            rate=args.rate,
                            on_progress=progress,
                        )
                except BaseException as exc:  # reported by the main thread
                    failure.append(exc)
                finally:
                    done.set()

            def table() -> Table:
                return progress_table(settings, produced(counts), args.events, source=source is not None)

            threading.Thread(target=produce, name="cdcwh-demo-generator", daemon=True).start()
            with Live(table(), console=console, refresh_per_second=2) as live:
                while not done.wait(0.5):
                    supervisor.check()
                    live.update(table())
                if failure:
                    raise failure[0]
                if source is not None:
                    wait_until_captured(supervisor, source, lambda: live.update(table()))
                settle = time.monotonic() + 30
                while time.monotonic() < settle:
                    supervisor.check()
                    live.update(table())
                    sink = scrape(settings, "sink")
                    if total(sink, "cdcwh_sink_rows_total") > 0 and sink_idle(settings):
                        break
                    time.sleep(0.5)
            if not console.is_terminal:
                console.line()  # the last frame of a live display ends without one when not on a terminal
            sink = scrape(settings, "sink")
            freshness = {q: quantile(sink, "postgres", q) for q in (0.5, 0.99)}
            if args.keep_running:
                if source is not None:
                    console.print(
                        "change the source and watch the marts follow: "
                        f"psql '{redact_dsn(source.dsn, placeholder=None)}'"
                    )
                shown = redact_dsn(postgres_dsn(settings), placeholder=None)
                marts = f"psql '{shown}'  (schema {settings.postgres.schema_})"
                console.print(f"explore the marts: {marts}")
                console.print("everything keeps running; Ctrl-C stops it")
                supervisor.run_until_signal()
                return 0
        finally:
            supervisor.stop()
        console.print("bringing every stage to the end of its topics ...")
        run_until_caught_up(env)
        print_summary(settings, freshness, args.rate, args.format)
        if source is not None:
            return reconcile_with_source(settings, source)
    return 0


def real_source(settings: Settings) -> RealSource:
    from cdcwh.source import source_dsn
    from cdcwh.source.connector import read_connector

    _, config = read_connector(settings.source.connector_path)
    return RealSource(dsn=source_dsn(settings), slot=config.get("slot.name", "debezium"))


def check_capture(supervisor: Supervisor) -> None:
    """Supervise, and give up (with the end of capture's log) once capture has exited a few times."""
    supervisor.check()
    child = next(c for c in supervisor.children if c.name == CAPTURE)
    if len(child.exits) >= CAPTURE_MAX_EXITS:
        tail = ""
        if child.log_path is not None and child.log_path.exists():
            tail = "\n".join(child.log_path.read_text(errors="replace").splitlines()[-15:])
        raise InfrastructureError(
            f"capture exited {len(child.exits)} times (codes {child.exits}); "
            f"the end of {child.log_path}:\n{tail}"
        )


def slot_state(dsn: str, slot: str, target: str | None = None) -> tuple[bool, bool] | None:
    """(active, confirmed_flush_lsn >= target) of the replication slot; None while it does not exist."""
    with psycopg.connect(dsn, connect_timeout=5, autocommit=True) as conn:
        row = conn.execute(
            "SELECT active, coalesce(confirmed_flush_lsn >= %s::pg_lsn, false) "
            "FROM pg_replication_slots WHERE slot_name = %s",
            (target or "0/0", slot),
        ).fetchone()
    return None if row is None else (bool(row[0]), bool(row[1]))


def wait_until_streaming(supervisor: Supervisor, source: RealSource) -> None:
    """Wait until capture streams from its slot (the JVM started, the snapshot of a new source taken)."""
    deadline = time.monotonic() + CAPTURE_START_TIMEOUT_S
    with console.status("starting capture (the Debezium engine in a JVM) ..."):
        while True:
            check_capture(supervisor)
            state = slot_state(source.dsn, source.slot)
            if state is not None and state[0]:
                return
            if time.monotonic() > deadline:
                raise InfrastructureError(
                    f"capture did not start streaming the replication slot {source.slot} in "
                    f"{CAPTURE_START_TIMEOUT_S:.0f} s; see {supervisor.log_dir / 'capture.log'} and "
                    f"{supervisor.log_dir / 'capture-engine.log'}"
                )
            time.sleep(0.5)


def wait_until_captured(supervisor: Supervisor, source: RealSource, refresh: Callable[[], None]) -> None:
    """Wait until capture has emitted every change of the workload.

    The slot's ``confirmed_flush_lsn`` moves when capture stores its offsets, which it does only for records
    Kafka has acknowledged; the connector confirms the start of the last commit record it processed, so
    the WAL position right after the workload is only reached once a later transaction has gone through.
    The demo makes that transaction itself, a no-op update of one customer (same values), and waits until the
    slot has confirmed past the position taken before it."""
    with psycopg.connect(source.dsn, connect_timeout=10, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        target = str(row[0]) if row else "0/0"
        conn.execute(
            "UPDATE public.customers SET email = email WHERE id = (SELECT min(id) FROM public.customers)"
        )
    deadline = time.monotonic() + CAPTURE_END_TIMEOUT_S
    while True:
        check_capture(supervisor)
        refresh()
        state = slot_state(source.dsn, source.slot, target)
        if state is not None and state[1]:
            return
        if time.monotonic() > deadline:
            raise InfrastructureError(
                f"capture did not confirm the source's WAL up to {target} in {CAPTURE_END_TIMEOUT_S:.0f} s; "
                f"see {supervisor.log_dir / 'capture.log'}"
            )
        time.sleep(0.5)


def reconcile_with_source(settings: Settings, source: RealSource) -> int:
    """``cdcwh reconcile``: every source table against silver; 1 when any differs."""
    from cdcwh.commands.reconcile import print_result
    from cdcwh.reconcile import reconcile

    console.print("comparing the source database with silver (cdcwh reconcile) ...")
    result = reconcile(settings, source_dsn_override=source.dsn)
    print_result(result, console)
    if not result.tables:
        console.print("no captured table in silver to compare with the source", style="bold red")
        return 1
    if not result.equal:
        console.print(f"source and silver differ: {result.differing_keys:,} keys (above)", style="bold red")
        return 1
    console.print("source and silver are equal for every table", style="bold green")
    return 0


def wait_until_consuming(settings: Settings, supervisor: Supervisor, timeout_s: float = 60.0) -> None:
    """Wait until ingest has joined its group (it then reports consumer lag), so the workload's freshness
    measures the pipeline rather than its start-up."""
    deadline = time.monotonic() + timeout_s
    with console.status("starting ingest, transform and sink ..."):
        while time.monotonic() < deadline:
            supervisor.check()
            if scrape(settings, "ingest").get("cdcwh_consumer_lag"):
                return
            time.sleep(0.25)


def produced(counts: dict[str, int]) -> int:
    """Change events produced so far (the generator thread updates ``counts`` concurrently)."""
    for _ in range(3):
        try:
            return sum(list(counts.values()))
        except RuntimeError:  # resized while copying
            continue
    return 0


def sink_idle(settings: Settings) -> bool:
    """True when the sink's last applied batch is more than two seconds old."""
    last = total(scrape(settings, "sink"), "cdcwh_last_success_timestamp_seconds", service="sink")
    return last > 0 and time.time() - last > 2


def print_summary(
    settings: Settings, freshness: dict[float, float | None], rate: float | None, fmt: Format = "table"
) -> None:
    """Rows per layer, the first days of revenue, freshness and where to explore (cdcwh.overview.layers);
    raises when PostgreSQL does not hold exactly the gold marts, after printing what it holds."""
    from cdcwh.overview.layers import collect_layers

    layers = collect_layers(settings)
    dsn = redact_dsn(postgres_dsn(settings))
    schema = settings.postgres.schema_
    grids = [
        Grid(
            "rows per layer",
            ["table", "bronze", "silver", "gold (DuckDB)", "PostgreSQL marts"],
            [[f"bronze.{b.table}", b.bronze, b.silver, None, None] for b in layers.bronze]
            + [[f"marts.{m.mart}", None, None, m.gold, m.postgres] for m in layers.marts],
            right=frozenset({"bronze", "silver", "gold (DuckDB)", "PostgreSQL marts"}),
        ),
        Grid(
            "marts.daily_revenue (first days)",
            ["order_date", "orders", "items_sold", "revenue"],
            [list(row.values()) for row in layers.sample],
        ),
    ]
    p50, p99 = freshness.get(0.5), freshness.get(0.99)
    document = {
        "layers": layers,
        "mismatched": layers.mismatched,
        "freshness_s": {"p50": p50, "p99": p99},
        "postgres": {"dsn": dsn, "schema": schema},
    }
    out = make_console()
    emit(fmt, grids if not layers.mismatched else grids[:1], document, out)
    if layers.mismatched:
        raise InfrastructureError(f"PostgreSQL does not match gold for: {', '.join(layers.mismatched)}")
    if fmt != "table":
        return
    if p50 is not None:
        out.print(
            f"freshness source commit -> PostgreSQL while streaming: p50 <= {p50:g} s, p99 <= {p99:g} s"
        )
        if rate is None:
            out.print(
                "(the workload was produced as fast as possible, so this includes the backlog; "
                "--rate gives a steady-state figure)"
            )
    out.print(
        "bronze keeps every change event, and the tombstone (a record with no value, for Kafka's log "
        "compaction) Debezium sends after each delete; silver holds each table's current rows"
    )
    out.print(
        f"the marts are in PostgreSQL, schema {schema}. The demo's embedded PostgreSQL stops with it: run "
        f"`cdcwh demo --keep-running` to explore them with psql while everything is up (it prints the URI), "
        f"or `cdcwh postgres` to start it again on the same data"
    )
