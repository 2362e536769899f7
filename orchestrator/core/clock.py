"""The one wall clock; pure code takes `now` as an argument instead of calling it."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def parse_engine_time(value: Any) -> datetime | None:
    """An engine's RFC 3339 time with nanoseconds (Docker's stats, a swarm's objects) as aware UTC; None for a
    missing, zero (`0001-…`) or unreadable value. Python keeps microseconds: the rest is cut."""
    if not isinstance(value, str) or not value or value.startswith("0001-"):
        return None
    head, _, frac = value.rstrip("Z").partition(".")
    try:
        return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00" if frac else f"{head}+00:00")
    except ValueError:
        return None
