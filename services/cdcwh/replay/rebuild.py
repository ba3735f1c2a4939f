"""Rebuild silver (and so gold) from bronze, for all tables or some.

Holds the DuckDB file for the whole rebuild, so a running transform service waits (and retries) meanwhile.
Steps: drop the chosen silver and silver_history tables and their watermarks; re-apply bronze in bounded
batches without touching gold; then recompute gold once and publish its difference, so PostgreSQL converges
to the rebuilt state without passing through partial states.
"""

from __future__ import annotations

from collections.abc import Callable

from cdcwh.config import Settings
from cdcwh.errors import ConfigError
from cdcwh.ingest.catalog import open_catalog
from cdcwh.kafka import client_config
from cdcwh.transform.batch import GOLD_STALE, run_batch, run_gold_batch, silver_name
from cdcwh.transform.bronze_reader import bronze_tables
from cdcwh.transform.gold import load_models
from cdcwh.transform.outbox import KafkaOutboxPublisher
from cdcwh.transform.warehouse import open_warehouse, quote, write_state

Progress = Callable[[str, int], None]


def rebuild(
    settings: Settings, tables: list[str] | None = None, progress: Progress | None = None
) -> dict[str, int]:
    """Rebuild the named silver tables (all when None); returns rows re-read per table and gold changes."""
    catalog = open_catalog(settings)
    topics = bronze_tables(catalog, settings.iceberg.namespace)
    by_name = {silver_name(topic): topic for topic in topics}
    chosen = sorted(by_name) if not tables else tables
    unknown = [t for t in chosen if t not in by_name]
    if unknown:
        raise ConfigError(f"no bronze table for {', '.join(unknown)}; known: {', '.join(sorted(by_name))}")
    models = load_models(settings.sql_path / "gold")
    publisher = KafkaOutboxPublisher(
        client_config(settings),
        topic_prefix=settings.kafka.gold_topic_prefix,
        partitions=settings.transform.gold_partitions,
    )
    con = open_warehouse(settings, wait_s=600)
    try:
        publisher.publish(con)  # leftovers first: their versions are older than what follows
        con.begin()
        for name in chosen:
            con.execute(f"DROP TABLE IF EXISTS silver.{quote(name)}")
            con.execute(f"DROP TABLE IF EXISTS silver_history.{quote(name)}")
            con.execute("DELETE FROM cdcwh.watermarks WHERE topic = ?", [by_name[name]])
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
            )
            if result.batch_id is None:
                break
            for name, applied in result.silver.items():
                counts[name] = counts.get(name, 0) + applied
                if progress is not None:
                    progress(name, applied)
        gold = run_gold_batch(con, models)
        counts["gold changes"] = gold.gold_changes
        publisher.publish(con)
        return counts
    finally:
        con.close()
