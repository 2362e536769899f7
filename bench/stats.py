"""Median/p90 summaries shared by the bench sections."""

from __future__ import annotations

import statistics


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(values: list[float]) -> dict[str, float]:
    """Seconds in, milliseconds out (median, p90, count)."""
    return {"median_ms": round(statistics.median(values) * 1000, 1), "p90_ms": round(pct(values, 0.9) * 1000, 1), "n": len(values)}


def ratio(a: list[float], b: list[float]) -> float:
    return round(statistics.median(a) / statistics.median(b), 2)
