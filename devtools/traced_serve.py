"""`orchestrator serve` under tracemalloc: each SIGUSR1 dumps a snapshot (bench/soak.py --tracemalloc)."""

from __future__ import annotations

import gc
import itertools
import os
import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType

SNAPSHOT_DIR = "SOAK_TRACEMALLOC_DIR"  # where the snapshots go: not ORCH_*: no setting, the soak sets it
FRAMES = 8  # enough to see which of our modules holds what an SDK allocated; more slows the server further


def main() -> None:
    out = Path(os.environ[SNAPSHOT_DIR])
    numbers = itertools.count()
    tracemalloc.start(FRAMES)

    def dump(_signum: int, _frame: FrameType | None) -> None:
        gc.collect()  # cycles waiting for the collector are not a leak
        n = next(numbers)
        tmp = out / f".snap-{n:03d}.pickle"
        tracemalloc.take_snapshot().dump(str(tmp))
        tmp.rename(out / f"snap-{n:03d}.pickle")  # appears whole: the soak polls for the name

    signal.signal(signal.SIGUSR1, dump)
    sys.argv = ["orchestrator", "serve"]
    from orchestrator.cli.main import main as cli

    cli()


if __name__ == "__main__":
    main()
