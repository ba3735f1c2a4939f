"""The gold models, shared by the transform (which computes them), the sink (which derives the PostgreSQL
mart tables from them) and the replay: one ``sql/gold/<mart>.sql`` file is the whole definition of a mart.

- ``catalog``: the model files, their headers, and the tables each reads (parsed with sqlglot);
- ``types``: a mart's columns and types, derived by running its model, and their PostgreSQL spelling;
- ``expressions``: the key and row of a mart as JSON, as the gold change messages carry them.
"""

from cdcwh.models.catalog import GoldModel, Incremental, load_model, load_models
from cdcwh.models.expressions import key_json_sql, row_json_sql
from cdcwh.models.types import DerivedMarts, MartColumn, MartTable, derive_marts, postgres_type, widens

__all__ = [
    "DerivedMarts",
    "GoldModel",
    "Incremental",
    "MartColumn",
    "MartTable",
    "derive_marts",
    "key_json_sql",
    "load_model",
    "load_models",
    "postgres_type",
    "row_json_sql",
    "widens",
]
