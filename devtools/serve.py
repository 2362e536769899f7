"""Run `orchestrator serve` as a real process on a free loopback port, for tests and benchmarks."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from devtools.livekit_server import free_port


@dataclass(frozen=True)
class Served:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, n: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""


@contextmanager
def serve(*, scope: str, tenants_file: Path, image: str, **env_overrides: str) -> Iterator[str]:
    """Yields the base URL once /healthz answers 200; the process is stopped on exit."""
    with serve_process(scope=scope, tenants_file=tenants_file, image=image, **env_overrides) as served:
        yield served.url


@contextmanager
def serve_process(
    *, scope: str, tenants_file: Path, image: str, port: int | None = None, module: str = "orchestrator.cli",
    ready_s: float = 30, **env_overrides: str,
) -> Iterator[Served]:
    """Like `serve`, but also hands out the process (benchmarks read its RSS; drills kill -9 it).

    `module`: what `python -m` runs (the soak's `devtools.traced_serve` wraps the same CLI in tracemalloc,
    which slows start-up: hence `ready_s`)."""
    port = port or free_port()
    env = {**os.environ, "ORCH_SCOPE": scope, "ORCH_TENANTS_FILE": str(tenants_file), "ORCH_AGENT_IMAGE": image,
           "ORCH_AGENT_MEMORY": "64m", "ORCH_AGENT_CPUS": "0.2", "ORCH_PORT": str(port),
           "ORCH_POOL_MAX": "0",  # no warm pool unless asked (a member is one more container in the scope)
           **env_overrides}
    # A file, not a pipe: nobody reads a pipe while the server runs, and a full pipe would block its logging.
    log_path = Path(tempfile.mkstemp(prefix=f"serve-{scope}-", suffix=".log")[1])
    with log_path.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", module, "serve"], env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"orchestrator exited early:\n{log_path.read_text(errors='replace')[-6000:]}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"orchestrator at {url} not healthy after {ready_s:g} s")
            time.sleep(0.1)
        yield Served(url=url, proc=proc, log_path=log_path)
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
