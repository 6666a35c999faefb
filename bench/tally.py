"""What the receiver saw, counted: pure functions over its (receive wall time, event id) records."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Record = tuple[float, int]  # (receive wall time, event id)


@dataclass(frozen=True, kw_only=True)
class Tally:
    expected: int
    requests: int
    distinct: int
    duplicates: int
    missing: int
    unexpected: int  # requests for ids outside the expected set
    first_at: float
    last_at: float


def tally(records: Sequence[Record], expected: set[int]) -> Tally:
    seen = [(t, i) for t, i in records if i in expected]
    ids = {i for _, i in seen}
    times = [t for t, _ in seen]
    return Tally(
        expected=len(expected),
        requests=len(seen),
        distinct=len(ids),
        duplicates=len(seen) - len(ids),
        missing=len(expected - ids),
        unexpected=len(records) - len(seen),
        first_at=min(times, default=math.nan),
        last_at=max(times, default=math.nan),
    )


def first_receipts(records: Sequence[Record]) -> dict[int, float]:
    first: dict[int, float] = {}
    for received_at, event_id in records:
        first[event_id] = min(received_at, first.get(event_id, math.inf))
    return first


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    if not sorted_values:
        return math.nan
    return sorted_values[max(1, math.ceil(p / 100 * len(sorted_values))) - 1]
