"""Pure logic, no I/O: Debezium envelope decoding, type codecs, contracts and schema evolution.

``decode_batch`` turns raw Kafka records into bronze Arrow tables and rejections; ``plan_evolution`` and
``conform`` reconcile a batch's schema with the bronze table's. See docs/decoding.md.
"""

from cdcwh.core.contract import ColumnContract, TableContract, parse_contract
from cdcwh.core.envelope import DEFAULT_MAX_VALUE_BYTES, decode_batch
from cdcwh.core.evolve import EvolutionPlan, conform, plan_evolution
from cdcwh.core.plan import METADATA_COLUMNS
from cdcwh.core.record import DecodedBatch, Ignored, IgnoreReason, RawRecord, Rejection, RejectReason

__all__ = [
    "DEFAULT_MAX_VALUE_BYTES",
    "METADATA_COLUMNS",
    "ColumnContract",
    "DecodedBatch",
    "EvolutionPlan",
    "IgnoreReason",
    "Ignored",
    "RawRecord",
    "RejectReason",
    "Rejection",
    "TableContract",
    "conform",
    "decode_batch",
    "parse_contract",
    "plan_evolution",
]
