"""The Iceberg catalog holding bronze: a SQL catalog (sqlite under the data dir by default)."""

from __future__ import annotations

import re

from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import Table
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from cdcwh.bronze import metadata_cache
from cdcwh.config import Settings

TOPIC_PROPERTY = "cdcwh.topic"
QUARANTINE_TABLE = "_quarantine"
FIRST_OPEN_ATTEMPTS = 4  # a race can be lost at each of the three creations, and one more try finds all


def open_catalog(settings: Settings) -> Catalog:
    """The configured catalog, or ``<data_dir>/iceberg/catalog.db`` with a file warehouse beside it."""
    metadata_cache.install()  # an append no longer deep-copies the table's metadata twenty times
    base = (settings.data_dir / "iceberg").resolve()
    uri = settings.iceberg.catalog_uri
    warehouse = settings.iceberg.warehouse
    if uri is None or warehouse is None:
        base.mkdir(parents=True, exist_ok=True)
    attempt = 1
    while True:
        try:
            catalog = SqlCatalog(
                "cdcwh",
                uri=uri or f"sqlite:///{base / 'catalog.db'}",
                warehouse=warehouse or (base / "warehouse").as_uri(),
            )
            catalog.create_namespace_if_not_exists(settings.iceberg.namespace)
            return catalog
        except (OperationalError, IntegrityError, ProgrammingError) as exc:
            # two processes opening a new catalog at once (`cdcwh run` starts ingest and transform together)
            # both see no tables, and the second CREATE TABLE or namespace INSERT fails: the other has made
            # them, so the next attempt finds them (sqlite and MySQL say so with OperationalError, PostgreSQL
            # with ProgrammingError for a table and IntegrityError for the namespace row)
            if attempt == FIRST_OPEN_ATTEMPTS or not _lost_a_creation_race(exc):
                raise
            attempt += 1


def _lost_a_creation_race(exc: Exception) -> bool:
    text = str(exc).lower()
    return "already exists" in text or "unique" in text or "duplicate" in text


def bronze_table_name(topic: str) -> str:
    """``shop.public.orders`` -> ``shop_public_orders``: lower case, anything but ``[a-z0-9_]`` -> ``_``."""
    return re.sub(r"[^a-z0-9_]", "_", topic.lower())


def bronze_tables(catalog: Catalog, namespace: str, topics: str | None = None) -> dict[str, Table]:
    """Bronze tables by topic (the quarantine table is not one); with ``topics`` (a regex, searched like
    ingest's ``CDCWH_KAFKA__TOPICS``) only those whose topic matches."""
    pattern = re.compile(topics) if topics is not None else None
    tables = {}
    for identifier in catalog.list_tables(namespace):
        if identifier[-1] == QUARANTINE_TABLE:
            continue
        table = catalog.load_table(identifier)
        topic = table.properties.get(TOPIC_PROPERTY)
        if topic and (pattern is None or pattern.search(topic)):
            tables[topic] = table
    return tables
