"""The landed offsets a bronze append records: the highest offset of every partition in the batch, merged
into what earlier batches landed (never lowered)."""

from __future__ import annotations

import random

import pyarrow as pa

from cdcwh.bronze.offsets import decode_offsets, encode_offsets, highest_offsets, merge_offsets


def rows(positions: list[tuple[str, int, int]]) -> pa.Table:
    topics, partitions, offsets = zip(*positions, strict=True)
    return pa.table(
        {
            "__topic": pa.array(topics, pa.string()),
            "__partition": pa.array(partitions, pa.int32()),
            "__offset": pa.array(offsets, pa.int64()),
        }
    )


def test_highest_offset_per_partition_in_any_order() -> None:
    rng = random.Random(3)
    positions = [(t, p, o) for t in ("shop.a", "shop.b") for p in range(3) for o in range(p * 10, p * 10 + 7)]
    rng.shuffle(positions)
    expected: dict[tuple[str, int], int] = {}
    for topic, partition, offset in positions:
        expected[(topic, partition)] = max(offset, expected.get((topic, partition), -1))

    found = highest_offsets(rows(positions))

    assert {(t, p): o for t, p, o in found} == expected
    assert len(found) == len(expected), "one entry per partition"


def test_merge_never_lowers_a_landed_offset() -> None:
    landed = {("shop.a", 0): 50, ("shop.a", 1): 5}
    batch = highest_offsets(rows([("shop.a", 0, 40), ("shop.a", 1, 9), ("shop.b", 0, 0)]))

    merged = merge_offsets(landed, batch)

    assert merged == {("shop.a", 0): 50, ("shop.a", 1): 9, ("shop.b", 0): 0}
    assert decode_offsets(encode_offsets(merged)) == merged
