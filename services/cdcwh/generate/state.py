"""Replay change events into the final table state: the reference a pipeline's output is checked against."""

from __future__ import annotations

from collections.abc import Iterable

from cdcwh.generate.change import SHOP_TABLES, SourceChange, State


def replay_state(changes: Iterable[SourceChange]) -> State:
    """Apply ``changes`` in order: upsert on r/c/u, delete on d.

    A column listed in ``change.toasted`` carries the TOAST placeholder, so the previous value is kept. Every
    shop table is present in the result, even when empty.
    """
    state: State = {name: {} for name in SHOP_TABLES}
    for change in changes:
        rows = state.setdefault(change.table, {})
        key = change.key_tuple()
        if change.op == "d":
            rows.pop(key, None)
            continue
        if change.after is None:
            raise ValueError(f"{change.table} {change.op} change at lsn {change.lsn} has no after image")
        row = dict(change.after)
        if change.toasted:
            previous = rows.get(key)
            if previous is None:
                raise ValueError(
                    f"{change.table} {key}: TOASTed columns {sorted(change.toasted)} with no prior row"
                )
            for column in change.toasted:
                row[column] = previous[column]
        rows[key] = row
    return state
