"""Bronze, the Iceberg tables every service reads or writes: the catalog and table naming (``catalog``),
the landed offsets in snapshot summaries (``offsets``) and the log incarnation marks (``incarnation``).

Ingest writes bronze; transform, replay and ``cdcwh status`` read it. Keeping its format here, outside the
services, means no service imports another to know what bronze looks like.
"""
