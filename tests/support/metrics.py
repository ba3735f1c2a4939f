"""Reading the process-wide Prometheus registry from in-process tests.

The registry lives as long as the test process and every in-process service run adds to it, so a test reads
a counter before and after what it exercises and asserts on the difference."""

from __future__ import annotations

from prometheus_client import REGISTRY


def counter_total(name: str, **labels: str) -> float:
    """Sum of the counter ``name`` over every label set that includes ``labels`` (0 when never counted)."""
    sample_name = name if name.endswith("_total") else f"{name}_total"
    total = 0.0
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name == sample_name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total
