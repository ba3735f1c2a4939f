"""The shop source simulator: Debezium PostgreSQL change events for the demo, the tests and benchmarks.

``ShopGenerator(seed).changes(n)`` yields exactly ``n`` ``SourceChange`` (snapshot ``r`` rows, then a
streaming mix of ``c``/``u``/``d``); ``encode`` turns one into the Kafka records Debezium's connector with the
JSON converter would write; ``write_jsonl`` / ``produce`` send them to a file or a broker; and
``replay_state`` / ``ShopGenerator.expected_state`` give the final table state to check a pipeline against.
"""

from cdcwh.generate.change import SHOP_TABLES, TOAST_PLACEHOLDER, SourceChange, State
from cdcwh.generate.debezium import DEBEZIUM_VERSION, KafkaRecord, encode
from cdcwh.generate.output import produce, read_jsonl, write_jsonl
from cdcwh.generate.pace import Drop, Pace
from cdcwh.generate.state import replay_state
from cdcwh.generate.workload import DEFAULT_START, ShopGenerator

__all__ = [
    "DEBEZIUM_VERSION",
    "DEFAULT_START",
    "Drop",
    "SHOP_TABLES",
    "TOAST_PLACEHOLDER",
    "KafkaRecord",
    "Pace",
    "ShopGenerator",
    "SourceChange",
    "State",
    "encode",
    "produce",
    "read_jsonl",
    "replay_state",
    "write_jsonl",
]
