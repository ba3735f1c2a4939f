"""Rebuild silver (and so gold) from bronze, for all tables or some.

Holds the DuckDB file for the whole rebuild, so a running transform service waits (and retries) meanwhile.
Steps: drop the chosen silver and silver_history tables and their watermarks; re-apply bronze in bounded
batches without touching gold; then recompute gold once and publish its difference, so PostgreSQL converges
to the rebuilt state without passing through partial states.

Tables are named as the transform names them (``cdcwh.silver_tables``, else ``batch.silver_name``), and only
the bronze tables whose topic matches ``CDCWH_KAFKA__TOPICS`` can be rebuilt. A table whose rows fail to apply
is left out like in any batch (logged, ``cdcwh.batch_models``), and the rest is rebuilt.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from cdcwh.bronze.catalog import bronze_tables, open_catalog
from cdcwh.config import Settings
from cdcwh.errors import ConfigError
from cdcwh.kafka import client_config
from cdcwh.models import load_models
from cdcwh.quality.spec import load_tests
from cdcwh.transform.batch import (
    GOLD_STALE,
    run_batch,
    run_gold_batch,
    silver_name,
    silver_names,
)
from cdcwh.transform.outbox import KafkaOutboxPublisher
from cdcwh.transform.silver import forget_columns
from cdcwh.warehouse import SILVER_FAILED, open_warehouse, quote, write_state

log = logging.getLogger(__name__)

Progress = Callable[[str, int], None]


def rebuild(
    settings: Settings, tables: list[str] | None = None, progress: Progress | None = None
) -> dict[str, int]:
    """Rebuild the named silver tables (all when None); returns rows re-read per table and gold changes. A
    table may also be named by its default name (``silver_name`` of its topic)."""
    catalog = open_catalog(settings)
    topics = bronze_tables(catalog, settings.iceberg.namespace, settings.kafka.topics)
    models = load_models(settings.sql_path / "gold")
    # gated like the transform's batches: a rebuild never publishes what a data quality test holds
    tests = load_tests(settings.sql_path)
    publisher = KafkaOutboxPublisher(
        client_config(settings),
        topic_prefix=settings.kafka.gold_topic_prefix,
        partitions=settings.transform.gold_partitions,
    )
    con = open_warehouse(settings, wait_s=600)
    try:
        names = silver_names(con, topics)
        by_name = {name: topic for topic, name in names.items()}
        aliases = {silver_name(topic): name for topic, name in names.items()}
        chosen = (
            sorted(by_name)
            if not tables
            else sorted({t if t in by_name else aliases.get(t, t) for t in tables})
        )
        unknown = [t for t in chosen if t not in by_name]
        if unknown:
            raise ConfigError(
                f"no bronze table matching CDCWH_KAFKA__TOPICS for {', '.join(unknown)}; "
                f"known: {', '.join(sorted(by_name))}"
            )
        publisher.publish(con)  # leftovers first: their versions are older than what follows
        con.begin()
        for name in chosen:
            con.execute(f"DROP TABLE IF EXISTS silver.{quote(name)}")
            con.execute(f"DROP TABLE IF EXISTS silver_history.{quote(name)}")
            con.execute("DELETE FROM cdcwh.volume_minutes WHERE table_name = ?", [name])  # counted again
            con.execute("DELETE FROM cdcwh.watermarks WHERE topic = ?", [by_name[name]])
            con.execute("DELETE FROM cdcwh.state WHERE name = ?", [SILVER_FAILED + name])
            forget_columns(con, name)
        # until the final full gold batch, gold no longer follows silver: if the rebuild stops early, the
        # transform's next batch recomputes gold in full instead of only what it re-reads
        write_state(con, GOLD_STALE, 1)
        con.commit()
        counts: dict[str, int] = dict.fromkeys(chosen, 0)
        while True:
            result = run_batch(
                settings,
                con,
                catalog,
                models,
                max_offsets_per_partition=settings.transform.max_offsets_per_partition,
                gold=False,
                tests=tests,
            )
            if result.batch_id is None:
                break
            for name, applied in result.silver.items():
                counts[name] = counts.get(name, 0) + applied
                if progress is not None:
                    progress(name, applied)
            for name, error in result.failed_tables.items():
                log.error(
                    "rebuild: silver.%s failed and is left out (the transform retries it): %s", name, error
                )
        gold = run_gold_batch(con, models, tests)
        counts["gold changes"] = gold.gold_changes
        publisher.publish(con)
        return counts
    finally:
        con.close()
