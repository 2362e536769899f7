"""The gVisor pool against the runc pool on one engine: the pool section of the bench, run twice on a private dockerd
that has `runsc` registered (the shared engine's runtimes are not ours to change), once with the agents under runc
and once under runsc, and the two warm figures side by side.

The private dockerd lives in a network namespace of its own (devtools.private_dockerd); each bench run is started
inside that namespace (`nsenter --net`), so its LiveKit, its orchestrators and the agents' network all live there
and nothing of it touches the host's network. The agents' host filter is off in both runs (it is iptables in the
orchestrator's namespace; here that is the private one, which has no rules of the host to keep). Usage:
`python -m bench.gvisor_pool [--runs 10] [--runsc PATH]`; writes bench-results/tmp/gvisor-pool-*.{json,md} unless `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker

from devtools.docker_helpers import TINY_IMAGE
from devtools.private_dockerd import PrivateDockerd, private_engine, runsc_config
from orchestrator.rules.pool import handover_for
from orchestrator.runtime.docker.pool import PooledDockerRuntime

RESULTS = Path("bench-results")
AGENT_IMAGE = "agent-orchestrator/agent:latest"


def bench_in(engine: PrivateDockerd, *, runtime: str | None, runs: int, out: Path) -> dict[str, object]:
    """One pool section inside the engine's network namespace, against that engine."""
    assert engine.proc is not None
    cmd = [sys.executable, "-m", "bench.run", "--sections", "pool", "--pool-runs", str(runs), "--pool-burst", "5",
           "--pool-size", "5", "--pool-min", "5", "--pool-steady", "0", "0", "--pool-crashes", "0", "--deadline", "900",
           "--out", str(out.relative_to(RESULTS)), *(["--pool-agent-runtime", runtime] if runtime else [])]
    env = {**os.environ, "DOCKER_HOST": engine.url, "ORCH_AGENT_HOST_FILTER": "false"}
    netns = f"/proc/{engine.proc.pid}/ns/net"
    # A fresh namespace's loopback is down: the served orchestrators listen on 127.0.0.1.
    subprocess.run(["nsenter", f"--net={netns}", "ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["nsenter", f"--net={netns}", *cmd], check=True, env=env, timeout=1200)
    return json.loads(out.with_suffix(".json").read_text())["pool"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--runsc", default=None, help="a runsc binary to register instead of the one on PATH")
    parser.add_argument("--out", default=None, help="file stem under bench-results/ (default: bench-results/tmp/)")
    args = parser.parse_args()
    runsc = args.runsc or shutil.which("runsc")
    config = runsc_config(Path(tempfile.mkdtemp()), runsc=runsc)
    source = docker.from_env()
    stem = RESULTS / "tmp" / time.strftime("gvisor-pool-%Y%m%dT%H%M%S")
    result: dict[str, object] = {}
    with private_engine("gvb", source, image=TINY_IMAGE, live_restore=False, extra_args=("--config-file", str(config))) as engine:
        engine.load_image(source, AGENT_IMAGE)
        for runtime in ("runc", "runsc"):  # runc first: the same engine, the same images, one after the other
            result[runtime] = bench_in(engine, runtime=None if runtime == "runc" else runtime, runs=args.runs,
                                       out=stem.with_name(f"{stem.name}-{runtime}"))
    warm = {rt: result[rt]["warm_trigger_to_listed"]["median_ms"] for rt in result}  # type: ignore[index]
    answered = {rt: result[rt]["warm_trigger_answer"]["median_ms"] for rt in result}  # type: ignore[index]
    cold = {rt: result[rt]["cold_trigger_to_listed"]["median_ms"] for rt in result}  # type: ignore[index]
    # What ORCH_POOL_HANDOVER=auto (the bench leaves it unset) picked for each pool on this engine.
    handover = {rt: handover_for(setting="auto", offered=PooledDockerRuntime.handovers, runtime=rt) for rt in result}
    version = subprocess.run([str(runsc), "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    summary = {"runsc": {"path": runsc, "version": version[0] if version else "?"}, "handover": handover,
               "warm_trigger_to_listed_p50_ms": warm, "warm_trigger_answer_p50_ms": answered, "cold_trigger_to_listed_p50_ms": cold,
               "gvisor_over_runc_warm_listed": round(warm["runsc"] / warm["runc"], 2),
               "gvisor_over_runc_cold_listed": round(cold["runsc"] / cold["runc"], 2)}
    out = RESULTS / args.out if args.out else stem
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"summary": summary, **result}, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
