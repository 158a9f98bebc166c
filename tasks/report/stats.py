"""The arithmetic of the report's figures: median, nearest-rank percentile, ratio, busy time."""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Sequence


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def percentile(values: Sequence[float], percent: int) -> float | None:
    """Nearest rank: the value at rank ceil(percent/100 · n) of the sorted values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-percent * len(ordered) // 100))  # integer ceil: no float rounding at n·0.95
    return ordered[rank - 1]


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator, None when there is nothing to divide by."""
    return numerator / denominator if denominator else None


def union_hours(intervals: list[tuple[dt.datetime, dt.datetime]]) -> float:
    """Hours covered by the union of the intervals (overlapping ones are not counted twice)."""
    total = 0.0
    current_start: dt.datetime | None = None
    current_end: dt.datetime | None = None
    for begin, end in sorted(intervals):
        if current_end is None or begin > current_end:
            if current_end is not None and current_start is not None:
                total += (current_end - current_start).total_seconds()
            current_start, current_end = begin, end
        else:
            current_end = max(current_end, end)
    if current_end is not None and current_start is not None:
        total += (current_end - current_start).total_seconds()
    return total / 3600
