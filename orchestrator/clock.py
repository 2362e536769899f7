"""The one wall clock; pure code takes `now` as an argument instead of calling it."""

from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
