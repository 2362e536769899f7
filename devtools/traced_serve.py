"""`orchestrator serve` with a heap probe: each SIGUSR1 dumps a snapshot (bench/soak.py --tracemalloc / --types).

Two probes: tracemalloc (where memory was allocated; slows the server several times) or a count of live objects
by type from the collector (what is held; costs nothing between snapshots).
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import signal
import sys
import tracemalloc
from collections import Counter
from pathlib import Path
from types import FrameType

SNAPSHOT_DIR = "SOAK_TRACEMALLOC_DIR"  # where the snapshots go: not ORCH_*: no setting, the soak sets it
PROBE = "SOAK_HEAP_PROBE"  # tracemalloc (default) | types
FRAMES = 8  # enough to see which of our modules holds what an SDK allocated; more slows the server further


def type_counts() -> dict[str, int]:
    """Live objects the collector tracks, by module-qualified type name."""
    return dict(Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects()))


def main() -> None:
    out = Path(os.environ[SNAPSHOT_DIR])
    by_type = os.environ.get(PROBE) == "types"
    numbers = itertools.count()
    if not by_type:
        tracemalloc.start(FRAMES)

    def dump(_signum: int, _frame: FrameType | None) -> None:
        gc.collect()  # cycles waiting for the collector are not a leak
        n = next(numbers)
        tmp = out / f".snap-{n:03d}"
        if by_type:
            tmp.write_text(json.dumps(type_counts()))
        else:
            tracemalloc.take_snapshot().dump(str(tmp))
        tmp.rename(out / f"snap-{n:03d}.{'json' if by_type else 'pickle'}")  # appears whole: the soak polls for it

    signal.signal(signal.SIGUSR1, dump)
    sys.argv = ["orchestrator", "serve"]
    from orchestrator.cli.main import main as cli

    cli()


if __name__ == "__main__":
    main()
