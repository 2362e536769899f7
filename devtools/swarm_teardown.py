"""Tearing a swarm harness run down in the safe order, also for runs whose owner process died."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import threading
from contextlib import closing
from pathlib import Path

import docker

from devtools.swarm_node import PREFIX, Node, _alive, _mounts_under, processes_naming, sh

_RUN_RE = re.compile(r"^sw-([0-9a-f]{4})-(hub|n\d+)$")


def remove_services(c: docker.DockerClient, *, label: str | None = None) -> None:
    """Every service (of `label`, when given), then the secrets left without one (the agents' short-lived ones)."""
    filters = {"label": label} if label else None
    for svc in c.api.services(filters=filters):
        try:
            c.api.remove_service(svc["ID"])
        except docker.errors.NotFound:
            pass
    for secret in c.api.secrets(filters=filters):
        try:
            c.api.remove_secret(secret["ID"])
        except docker.errors.APIError:
            pass  # still in use by a service that is not ours


def destroy_run(run: str, *, nodes: list[Node], hub: str, host_if: str) -> list[str]:
    """Tear one run down in the safe order; returns what could not be cleaned (empty when all is gone)."""
    # 1. Services, then containers, while the daemons still answer (a stopped dockerd leaves shims behind).
    for node in nodes:  # any manager that answers removes every service of the run's swarm
        if node._pid() is None:
            continue
        try:
            with closing(node.client(timeout=10)) as c:
                remove_services(c)
            break
        except docker.errors.DockerException:
            continue
    for node in nodes:
        if node._pid() is None:
            continue
        try:
            with closing(node.client(timeout=20)) as c:
                for row in c.api.containers(all=True):
                    try:
                        c.api.remove_container(row["Id"], force=True)
                    except docker.errors.DockerException:
                        pass
        except docker.errors.DockerException:
            pass
    # 2. The daemons, by pidfile, in parallel (a manager takes ~9 s to stop).
    threads = [threading.Thread(target=n.stop) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 3. Anything still naming a node's exec root (containerd-shims of containers that outlived their dockerd).
    for node in nodes:
        for pid, _ in processes_naming(str(node.exec_root) + "/"):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    # Any livekit-server or other process still inside one of the run's namespaces.
    for entry in Path("/run/netns").glob(f"{PREFIX}{run}-*"):
        for pid in sh("ip", "netns", "pids", entry.name, check=False).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
    # 4. Mounts under the roots, deepest first; then the files.
    for node in nodes:
        for point in _mounts_under(node.data_root, node.exec_root):
            sh("umount", "-l", point, check=False)
        for path in (node.data_root, node.exec_root):
            shutil.rmtree(path, ignore_errors=True)
        for leftover in (node.sock, node.pidfile, node.config_file):
            leftover.unlink(missing_ok=True)
    # 5. The namespaces (the veth pairs and the host's interface go with them).
    for name in [n.netns for n in nodes] + [hub]:
        if Path(f"/run/netns/{name}").exists():
            sh("ip", "netns", "del", name, check=False)
    # 6. Check.
    left = []
    for node in nodes:
        left += [f"process {pid}: {cmd[:120]}" for pid, cmd in processes_naming(str(node.exec_root) + "/")]
        left += [f"mount {p}" for p in _mounts_under(node.data_root, node.exec_root)]
    left += [f"netns {p.name}" for p in Path("/run/netns").glob(f"{PREFIX}{run}-*")] if Path("/run/netns").exists() else []
    if sh("ip", "link", "show", host_if, check=False).returncode == 0:
        sh("ip", "link", "del", host_if, check=False)
    return left


def sweep_stale() -> None:
    """Tear down runs whose owner process is gone (a test run killed with SIGKILL cannot clean up itself)."""
    runs: dict[str, set[str]] = {}
    for entry in Path("/run/netns").glob(f"{PREFIX}*") if Path("/run/netns").exists() else []:
        if m := _RUN_RE.match(entry.name):
            runs.setdefault(m.group(1), set()).add(m.group(2))
    for owner in Path("/run").glob(f"{PREFIX}????.owner"):
        runs.setdefault(owner.name[len(PREFIX):len(PREFIX) + 4], set())
    for run, parts in runs.items():
        owner = Path(f"/run/{PREFIX}{run}.owner")
        try:
            info = json.loads(owner.read_text())
        except (OSError, ValueError):
            info = {}
        if info.get("pid") and _alive(int(info["pid"])):
            continue
        count = max([int(p[1:]) for p in parts if p.startswith("n")] + [int(info.get("nodes", 0))] + [0])
        destroy_run(run, nodes=[Node(run, k, "") for k in range(1, count + 1)], hub=f"{PREFIX}{run}-hub", host_if=f"sw{run}r")
        owner.unlink(missing_ok=True)
