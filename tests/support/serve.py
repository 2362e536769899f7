"""Run `orchestrator serve` as a real process on a free loopback port, for tests and benchmarks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.livekit_server import free_port


@contextmanager
def serve(*, scope: str, tenants_file: Path, image: str, **env_overrides: str) -> Iterator[str]:
    """Yields the base URL once /healthz answers 200; the process is stopped on exit."""
    port = free_port()
    env = {**os.environ, "ORCH_SCOPE": scope, "ORCH_TENANTS_FILE": str(tenants_file), "ORCH_AGENT_IMAGE": image,
           "ORCH_AGENT_MEMORY": "64m", "ORCH_AGENT_CPUS": "0.2", "ORCH_PORT": str(port), **env_overrides}
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "serve"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"orchestrator exited early:\n{proc.stdout.read().decode() if proc.stdout else ''}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"orchestrator at {url} not healthy after 30 s")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
