"""What grew in the served process between two heap snapshots (devtools/traced_serve.py), as text."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

_OURS = ("/orchestrator/", "/api/")  # the first frame of ours in a traceback says who holds an SDK's allocation


def _holder(tb: tracemalloc.Traceback) -> str:
    """The innermost frame inside our code (else the innermost frame): where to look for the growth."""
    for frame in reversed(tb):  # a Traceback lists the oldest frame first
        if any(part in frame.filename for part in _OURS):
            return f"{frame.filename.split('/wt-')[-1]}:{frame.lineno}"
    return f"{tb[-1].filename}:{tb[-1].lineno}"


def top_growth(before: Path, after: Path, *, cycles: int, limit: int = 25) -> list[str]:
    """The allocation sites that grew most, grouped by our innermost frame, in bytes per cycle."""
    skip = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap*>")]
    old = tracemalloc.Snapshot.load(str(before)).filter_traces(skip)
    new = tracemalloc.Snapshot.load(str(after)).filter_traces(skip)
    grown: dict[str, list[int]] = {}
    for stat in new.compare_to(old, "traceback"):
        entry = grown.setdefault(_holder(stat.traceback), [0, 0, 0])
        entry[0] += stat.size_diff
        entry[1] += stat.count_diff
        entry[2] = max(entry[2], stat.size_diff)
    total = sum(v[0] for v in grown.values())
    lines = [f"heap growth {before.name} → {after.name}: {total / 1024:+.1f} KiB over {cycles} cycles "
             f"({total / max(1, cycles):+.0f} B/cycle)"]
    for holder, (size, count, _) in sorted(grown.items(), key=lambda kv: -kv[1][0])[:limit]:
        lines.append(f"  {size / 1024:+9.1f} KiB {count:+7d} blocks {size / max(1, cycles):+7.0f} B/cycle  {holder}")
    return lines


def type_growth(before: Path, after: Path, *, cycles: int, limit: int = 25) -> list[str]:
    """The types whose live object count grew most (gc-tracked objects only), per 1,000 cycles."""
    old, new = json.loads(before.read_text()), json.loads(after.read_text())
    grown = sorted(((new.get(t, 0) - old.get(t, 0), t) for t in set(old) | set(new)), reverse=True)
    lines = [f"live objects {before.name} → {after.name} over {cycles} cycles: {sum(new.values()) - sum(old.values()):+d}"]
    lines += [f"  {n:+8d} ({n * 1000 / max(1, cycles):+9.1f} per 1,000 cycles)  {t}" for n, t in grown[:limit] if n > 0]
    return lines
