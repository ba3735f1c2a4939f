"""``cdcwh demo``: the local default end to end.

Starts the embedded broker and Postgres (unless configured), runs ingest, transform and sink under the
supervisor, produces the shop workload while showing live progress read from the services' own /metrics,
then brings everything to the end of the topics, checks that PostgreSQL holds exactly the gold marts, and
prints a summary. ``--keep-running`` leaves it all up (metrics exposed) until Ctrl-C.
"""

from __future__ import annotations

import argparse
import threading
import time

import psycopg
from confluent_kafka.admin import AdminClient
from psycopg import sql
from rich.console import Console
from rich.live import Live
from rich.table import Table

from cdcwh.commands import generate
from cdcwh.commands.run import child_env, infrastructure
from cdcwh.config import Settings
from cdcwh.embedded import postgres_dsn
from cdcwh.errors import InfrastructureError
from cdcwh.generate import SHOP_TABLES
from cdcwh.kafka import client_config, ensure_topics
from cdcwh.metrics import Samples, metrics_port
from cdcwh.metrics import scrape as scrape_metrics
from cdcwh.supervisor import Supervisor, run_until_caught_up

console = Console()


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


def progress_table(settings: Settings, produced: int, target: int) -> Table:
    ingest, transform, sink = (scrape(settings, s) for s in ("ingest", "transform", "sink"))
    table = Table(title="cdcwh demo", show_header=True)
    for column in ("stage", "count", "freshness p50 / p99 (s)"):
        table.add_column(column, justify="right" if column != "stage" else "left")

    def fresh(samples: Samples, stage: str) -> str:
        p50, p99 = quantile(samples, stage, 0.5), quantile(samples, stage, 0.99)
        return "-" if p50 is None else f"<= {p50:g} / <= {p99:g}"

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


def run(args: argparse.Namespace, settings: Settings) -> int:
    with infrastructure(settings):
        env = child_env(settings)
        # create the source topics first, so ingest subscribes at once instead of at its next topic refresh
        ensure_topics(AdminClient(client_config(settings)), [f"shop.public.{t}" for t in SHOP_TABLES], 3)
        supervisor = Supervisor(settings.data_dir / "logs", env)
        supervisor.start()
        wait_until_consuming(settings, supervisor)
        counts: dict[str, int] = {}
        failure: list[BaseException] = []
        freshness: dict[float, float | None] = {}
        try:
            done = threading.Event()

            def produce() -> None:
                try:
                    generate.produce_workload(
                        settings, events=args.events, seed=args.seed, rate=args.rate, counts=counts
                    )
                except BaseException as exc:  # reported by the main thread
                    failure.append(exc)
                finally:
                    done.set()

            threading.Thread(target=produce, name="cdcwh-demo-generator", daemon=True).start()
            with Live(
                progress_table(settings, 0, args.events), console=console, refresh_per_second=2
            ) as live:
                while not done.wait(0.5):
                    supervisor.check()
                    live.update(progress_table(settings, produced(counts), args.events))
                if failure:
                    raise failure[0]
                settle = time.monotonic() + 30
                while time.monotonic() < settle:
                    supervisor.check()
                    live.update(progress_table(settings, produced(counts), args.events))
                    sink = scrape(settings, "sink")
                    if total(sink, "cdcwh_sink_rows_total") > 0 and sink_idle(settings):
                        break
                    time.sleep(0.5)
            sink = scrape(settings, "sink")
            freshness = {q: quantile(sink, "postgres", q) for q in (0.5, 0.99)}
            if args.keep_running:
                console.print("everything keeps running; Ctrl-C stops it")
                supervisor.run_until_signal()
                return 0
        finally:
            supervisor.stop()
        console.print("bringing every stage to the end of its topics ...")
        run_until_caught_up(env)
        print_summary(settings, freshness, args.rate)
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


def print_summary(settings: Settings, freshness: dict[float, float | None], rate: float | None) -> None:
    from cdcwh.ingest.catalog import TOPIC_PROPERTY, open_catalog
    from cdcwh.transform.batch import silver_name
    from cdcwh.transform.warehouse import count, open_warehouse, quote

    catalog = open_catalog(settings)
    layers = Table(title="rows per layer")
    layers.add_column("table", no_wrap=True)
    for column in ("bronze", "silver", "gold (DuckDB)", "PostgreSQL marts"):
        layers.add_column(column, justify="right")
    con = open_warehouse(settings, read_only=True)
    dsn = postgres_dsn(settings)
    schema = settings.postgres.schema_
    mismatched = []
    with psycopg.connect(dsn) as pg:
        for identifier in sorted(catalog.list_tables(settings.iceberg.namespace)):
            table = catalog.load_table(identifier)
            name = identifier[-1]
            bronze_rows = table.scan().count()
            topic = table.properties.get(TOPIC_PROPERTY)
            silver_rows = (
                "-"
                if topic is None
                else f"{count(con, f'SELECT count(*) FROM silver.{quote(silver_name(topic))}'):,}"
            )
            layers.add_row(f"bronze.{name}", f"{bronze_rows:,}", silver_rows, "", "")
        marts = con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'gold' ORDER BY 1"
        ).fetchall()
        for (mart,) in marts:
            gold_rows = count(con, f"SELECT count(*) FROM gold.{quote(mart)}")
            target = sql.Identifier(schema, mart)
            pg_rows = pg.execute(sql.SQL("SELECT count(*) FROM {}").format(target)).fetchall()[0][0]
            if gold_rows != pg_rows:
                mismatched.append(mart)
            layers.add_row(f"marts.{mart}", "", "", f"{gold_rows:,}", f"{pg_rows:,}")
        revenue = pg.execute(
            sql.SQL(
                "SELECT order_date, orders, items_sold, revenue FROM {} ORDER BY order_date LIMIT 5"
            ).format(sql.Identifier(schema, "daily_revenue"))
        ).fetchall()
    con.close()
    console.print(layers)
    if mismatched:
        raise InfrastructureError(f"PostgreSQL does not match gold for: {', '.join(mismatched)}")
    sample = Table("order_date", "orders", "items_sold", "revenue", title="marts.daily_revenue (first days)")
    for row in revenue:
        sample.add_row(*(str(v) for v in row))
    console.print(sample)
    p50, p99 = freshness.get(0.5), freshness.get(0.99)
    if p50 is not None:
        console.print(
            f"freshness source commit -> PostgreSQL while streaming: p50 <= {p50:g} s, p99 <= {p99:g} s"
        )
        if rate is None:
            console.print(
                "(the workload was produced as fast as possible, so this includes the backlog; "
                "--rate gives a steady-state figure)"
            )
    console.print(f"explore the marts: psql '{dsn}'  (schema {schema})")
