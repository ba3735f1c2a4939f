"""Bronze maintenance: tables that stay fast however long they live.

Every ingest checkpoint appends one small data file (and, without merging, one manifest) to each table it
touches: 86,400 of each per busy table per day at one checkpoint a second. Three things keep that bounded:

1. **Manifests merged on append** (``MERGE_PROPERTIES``): Iceberg's merge-append folds small manifests into
   one once a snapshot has ``commit.manifest.min-count-to-merge`` of them, so a commit reads and writes a
   bounded number of manifests. Set on new tables at creation and on existing ones by ``ensure_properties``.
2. **Compaction of settled files** (``compact``): the data files of a day partition whose rows were all
   ingested more than ``CDCWH_ICEBERG__COMPACT_AFTER_S`` ago are rewritten into files near
   ``CDCWH_ICEBERG__TARGET_FILE_BYTES``, sorted by (``__partition``, ``__offset``), in one Iceberg *overwrite*
   commit that deletes exactly those files and adds the new ones: the same rows, no row added or lost. The
   commit carries the table's landed offsets and log marks unchanged, so ingest's exactly-once check reads the
   same offsets before and after; a concurrent append makes the commit fail (Iceberg checks the snapshot it
   started from), and the compaction is planned again from the new snapshot. The transform's incremental
   reader sees a snapshot that is not an append and plans one full scan bounded by its watermarks, so it
   neither skips nor re-reads a row.
3. **Orphan files** (``remove_orphans``): files in the table's location that no metadata file, manifest list,
   manifest or data file reference names (a crash between writing a file and committing it, an uncommitted
   write of ``IcebergBronzeWriter._isolate``) are deleted once older than ``CDCWH_ICEBERG__ORPHAN_AGE_S``.

``CDCWH_ICEBERG__RETENTION_DAYS`` optionally deletes the rows ingested before that many days (whole day
partitions), in the same kind of commit.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import AlwaysTrue, LessThan
from pyiceberg.io.pyarrow import ArrowScan, _dataframe_to_data_files
from pyiceberg.manifest import DataFile, ManifestContent, ManifestFile
from pyiceberg.table import FileScanTask, Table

from cdcwh import metrics
from cdcwh.bronze.incarnation import MARKS_PROPERTY, encode_marks, log_marks
from cdcwh.bronze.offsets import OFFSETS_PROPERTY, encode_offsets, landed_offsets
from cdcwh.config import IcebergSettings

log = logging.getLogger(__name__)

INGESTED_AT = "__ingested_at"
COMMIT_ATTEMPTS = 5
ORPHAN_LEDGER = ".cdcwh-orphans.json"
MERGE_PROPERTIES = {
    "commit.manifest-merge.enabled": "true",
    "commit.manifest.min-count-to-merge": "16",
    "commit.manifest.target-size-bytes": str(8 * 1024 * 1024),
}


@dataclass
class MaintenanceResult:
    """What one maintenance pass did to one table."""

    table: str
    files_rewritten: int = 0
    files_written: int = 0
    bytes_rewritten: int = 0
    rows_rewritten: int = 0
    orphans_removed: int = 0
    rows_expired: int = 0
    partitions: list[str] = field(default_factory=list)


def ensure_properties(table: Table) -> None:
    """Give an existing table the manifest-merge properties (tables made before they existed)."""
    missing = {k: v for k, v in MERGE_PROPERTIES.items() if table.properties.get(k) != v}
    if missing:
        with table.transaction() as tx:
            tx.set_properties(missing)
        log.info("set %s on %s", ", ".join(sorted(missing)), table.name())


def maintain(table: Table, settings: IcebergSettings, now: datetime | None = None) -> MaintenanceResult:
    """One maintenance pass over ``table``: properties, retention, compaction, orphans."""
    started = time.monotonic()
    now = now or datetime.now(UTC)
    result = MaintenanceResult(".".join(table.name()))
    ensure_properties(table)
    if settings.retention_days is not None:
        result.rows_expired = expire_rows(table, now - timedelta(days=settings.retention_days))
    compact(table, now - timedelta(seconds=settings.compact_after_s), settings, result)
    result.orphans_removed = remove_orphans(table, now, timedelta(seconds=settings.orphan_age_s))
    name = table.name()[-1]
    metrics.MAINTENANCE_FILES.labels(name, "rewritten").inc(result.files_rewritten)
    metrics.MAINTENANCE_FILES.labels(name, "written").inc(result.files_written)
    metrics.MAINTENANCE_FILES.labels(name, "orphans_removed").inc(result.orphans_removed)
    metrics.MAINTENANCE_BYTES.labels(name).inc(result.bytes_rewritten)
    metrics.MAINTENANCE_DURATION.observe(time.monotonic() - started)
    table.refresh()
    current = table.current_snapshot()
    if current is not None:
        manifests = [m for m in current.manifests(table.io) if m.content == ManifestContent.DATA]
        metrics.BRONZE_MANIFESTS.labels(name).set(len(manifests))
        metrics.BRONZE_DATA_FILES.labels(name).set(sum(_live_files(m, table) for m in manifests))
    return result


def compact(
    table: Table, settled_before: datetime, settings: IcebergSettings, result: MaintenanceResult
) -> None:
    """Rewrite the small settled data files of each day partition into files near the target size."""
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        table.refresh()
        groups = settled_groups(table, settled_before, settings)
        if not groups:
            return
        try:
            _rewrite(table, groups, settings, result)
            return
        except CommitFailedException as exc:  # an append landed meanwhile: plan again from it
            log.info("compaction of %s conflicted (attempt %d): %s", table.name(), attempt, exc)
            time.sleep(0.1 * attempt)
    log.warning("compaction of %s deferred: %d conflicting commits", table.name(), COMMIT_ATTEMPTS)


def settled_groups(
    table: Table, settled_before: datetime, settings: IcebergSettings
) -> dict[str, list[DataFile]]:
    """Per partition (as text), the small data files all of whose rows were ingested before the cut."""
    current = table.current_snapshot()
    if current is None:
        return {}
    names = {f.name for f in table.schema().fields}
    column = next((c for c in (INGESTED_AT, "quarantined_at") if c in names), None)
    if column is None:
        return {}
    field_id = table.schema().find_field(column).field_id
    cut_us = int(settled_before.timestamp() * 1_000_000)
    small = settings.target_file_bytes // 2
    groups: dict[str, list[DataFile]] = defaultdict(list)
    for manifest in current.manifests(table.io):
        if manifest.content != ManifestContent.DATA:
            continue
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
            data_file = entry.data_file
            upper = (data_file.upper_bounds or {}).get(field_id)
            if upper is None or data_file.file_size_in_bytes >= small:
                continue
            if int.from_bytes(upper, "little", signed=True) >= cut_us:
                continue
            groups[str(data_file.partition)].append(data_file)
    return {k: v for k, v in groups.items() if len(v) >= settings.min_files_to_compact}


def _rewrite(
    table: Table, groups: dict[str, list[DataFile]], settings: IcebergSettings, result: MaintenanceResult
) -> None:
    old = [f for files in groups.values() for f in files]
    rows = ArrowScan(table.metadata, table.io, table.schema(), row_filter=AlwaysTrue()).to_table(
        [FileScanTask(f) for f in old]
    )
    expected = sum(f.record_count for f in old)
    if rows.num_rows != expected:
        raise RuntimeError(
            f"compaction of {table.name()} read {rows.num_rows} rows, the files hold {expected}"
        )
    order = [c for c in ("__partition", "__offset", "partition", "offset") if c in rows.column_names]
    rows = rows.sort_by([(c, "ascending") for c in order])
    metadata = table.metadata.model_copy(
        update={
            "properties": {
                **table.metadata.properties,
                "write.target-file-size-bytes": str(settings.target_file_bytes),
            }
        }
    )
    new = list(_dataframe_to_data_files(metadata, rows, table.io))
    with table.transaction() as tx:
        with tx.update_snapshot(snapshot_properties=_carried(table)).overwrite() as rewrite:
            for data_file in old:
                rewrite.delete_data_file(data_file)
            for data_file in new:
                rewrite.append_data_file(data_file)
    result.files_rewritten += len(old)
    result.files_written += len(new)
    result.bytes_rewritten += sum(f.file_size_in_bytes for f in old)
    result.rows_rewritten += rows.num_rows
    result.partitions.extend(sorted(groups))
    log.info(
        "compacted %d files (%d rows) of %s into %d",
        len(old),
        rows.num_rows,
        ".".join(table.name()),
        len(new),
    )


def expire_rows(table: Table, before: datetime) -> int:
    """Delete the rows ingested before ``before`` (whole day partitions); returns how many."""
    table.refresh()
    if table.current_snapshot() is None or INGESTED_AT not in {f.name for f in table.schema().fields}:
        return 0  # the quarantine table keeps its records: they are the audit trail
    condition = LessThan(INGESTED_AT, before.isoformat())  # type: ignore[call-arg,arg-type]
    count = int(table.scan(row_filter=condition, selected_fields=("__offset",)).to_arrow().num_rows)
    if count:
        table.delete(condition, snapshot_properties=_carried(table))
        log.info("retention: deleted %d rows of %s ingested before %s", count, table.name(), before)
    return count


def remove_orphans(table: Table, now: datetime, age: timedelta) -> int:
    """Delete the files under the table's location that no metadata has referenced for ``age``.

    Both clocks must have run out: the file was written ``age`` ago (an append in flight is younger), and
    ``age`` has passed since a pass first found it unreferenced (a file that compaction replaced is old, but a
    reader that loaded the metadata before the expiry may still be reading it). First sightings are kept in
    ``<table location>/.cdcwh-orphans.json``. Local file systems only."""
    location = urlparse(table.location())
    if location.scheme not in ("", "file"):
        return 0  # object stores: use the store's lifecycle rules or Spark's remove_orphan_files
    root = Path(location.path)
    if not root.exists():
        return 0
    ledger_path = root / ORPHAN_LEDGER
    try:
        seen: dict[str, float] = json.loads(ledger_path.read_text())
    except (OSError, ValueError):
        seen = {}
    referenced = _referenced(table)
    cutoff = (now - age).timestamp()
    removed = 0
    still: dict[str, float] = {}
    for path in root.rglob("*"):
        if not path.is_file() or str(path) in referenced or path.name.startswith("."):
            continue
        if path.parent.name == "metadata" and path.suffix == ".json":
            continue  # metadata files: Iceberg's own delete-after-commit keeps their number bounded
        first_seen = seen.get(str(path), now.timestamp())
        if path.stat().st_mtime < cutoff and first_seen < cutoff:
            path.unlink()
            removed += 1
        else:
            still[str(path)] = first_seen
    ledger_path.write_text(json.dumps(still))
    if removed:
        log.info("removed %d orphan files of %s", removed, table.name())
    return removed


_MANIFEST_FILES: dict[str, dict[str, frozenset[str]]] = {}
"""Per table location, the data files each manifest of its last pass names, by the manifest's path (a manifest
file is never rewritten, and its name is a fresh uuid: never stale)."""


def _referenced(table: Table) -> set[str]:
    """Every file path the table's metadata names, across the retained snapshots. Snapshots share most of
    their manifests: each is read once per pass, and a manifest the table's previous pass read is not read
    again (most of a maintenance pass's time went to reading the same manifests). Only the manifests this
    pass saw are kept for the next."""
    known = _MANIFEST_FILES.get(table.location(), {})
    seen: dict[str, frozenset[str]] = {}
    paths: set[str] = set()
    for snapshot in table.snapshots():
        paths.add(_local(snapshot.manifest_list))
        for manifest in snapshot.manifests(table.io):
            path = _local(manifest.manifest_path)
            if path in seen:
                continue
            named = known.get(path)
            if named is None:
                entries = manifest.fetch_manifest_entry(table.io, discard_deleted=False)
                named = frozenset(_local(entry.data_file.file_path) for entry in entries)
            seen[path] = named
            paths.add(path)
            paths |= named
    paths.add(_local(table.metadata_location))
    for logged in table.metadata.metadata_log:
        paths.add(_local(logged.metadata_file))
    _MANIFEST_FILES[table.location()] = seen
    return paths


def _local(uri: str) -> str:
    return os.path.normpath(urlparse(uri).path)


def _carried(table: Table) -> dict[str, str]:
    """The landed offsets and log marks of the table's newest snapshot that has them, for a maintenance
    commit, so the newest snapshot keeps answering for them."""
    properties = {OFFSETS_PROPERTY: encode_offsets(landed_offsets(table))}
    marks = log_marks(table)
    if marks:
        properties[MARKS_PROPERTY] = encode_marks(marks)
    return properties


def _live_files(manifest: ManifestFile, table: Table) -> int:
    return sum(1 for _ in manifest.fetch_manifest_entry(table.io, discard_deleted=True))


def maintain_all(catalog: Catalog, namespace: str, settings: IcebergSettings) -> list[MaintenanceResult]:
    """``maintain`` every table of the bronze namespace (the quarantine table included); a table whose pass
    fails is logged and counted, and the others go on."""
    results = []
    for identifier in sorted(catalog.list_tables(namespace)):
        try:
            results.append(maintain(catalog.load_table(identifier), settings))
        except Exception as exc:  # maintenance never stops ingest: the next pass tries again
            metrics.ERRORS.labels("ingest", "maintenance").inc()
            log.warning("maintenance of %s failed (%s: %s)", ".".join(identifier), type(exc).__name__, exc)
    return results
