"""One timed ``rebuild`` of silver and gold, in its own process (started by the rebuild section).

Run as ``python -m bench._rebuild`` with the cdcwh environment of an ingested data dir; prints one JSON
line: seconds and the counts ``rebuild`` returns. Its own process, so its Kafka producer ends with it and
its peak RSS is measurable."""

import json
import time

from cdcwh.config import load_settings
from cdcwh.logs import silence_known_warnings
from cdcwh.replay.rebuild import rebuild

silence_known_warnings()
start = time.perf_counter()
counts = rebuild(load_settings())
print(json.dumps({"seconds": time.perf_counter() - start, "counts": counts}))  # noqa: T201
