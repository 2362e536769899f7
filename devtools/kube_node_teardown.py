"""Undoing a real node (devtools.kube_node), whatever state its start got to: pods, processes, mounts, the
namespace, cgroups, the kernel tunables the kubelet set. Returns what could not be undone, so a test can fail on it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from devtools.netpol import stop_enforcer

PREFIX = "kn-"  # every node's names (namespace, data dirs, cgroup root) start with it


def sh(*args: str, check: bool = True, timeout: float = 60, input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(args, capture_output=True, timeout=timeout, input=input)
    out = subprocess.CompletedProcess(args, res.returncode, res.stdout.decode(errors="replace"), res.stderr.decode(errors="replace"))
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({res.returncode}): {out.stderr.strip()[:2000]}")
    return out


def _processes_naming(needle: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _mounts_under(*roots: Path) -> list[str]:
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(point == str(r) or point.startswith(f"{r}/") for r in roots):
            found.append(point)
    return found


class NodeTeardown:
    """The teardown half of RealNode (its attributes: procs, sock, base, state, netns, host_if, saved_tunables,
    cluster, name, run, cgroup_root and _hierarchies)."""

    def stop(self) -> list[str]:
        """Undo everything start() did, whatever state it got to; returns what could not be undone (empty = clean)."""
        problems: list[str] = []
        kubelet = self.procs.get("kubelet")
        if kubelet is not None and kubelet.poll() is None:
            self._delete_pods()
        stop_enforcer(self)
        for name in ("kubelet", "relay"):
            self._end(name)
        self._kill_cgroup_processes()
        self._end("containerd")
        for pid in _processes_naming(str(self.sock)):  # shims outlive containerd
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._wait_gone(lambda: _processes_naming(str(self.sock)), 10)
        for point in sorted(_mounts_under(self.base, self.state), key=len, reverse=True):
            sh("umount", "-l", point, check=False)
        if (left := _mounts_under(self.base, self.state)):
            problems.append(f"mounts left: {left}")
        sh("ip", "netns", "del", self.netns, check=False)
        sh("ip", "link", "del", self.host_if, check=False)  # gone with the namespace; in case the peer never moved
        self._remove_cgroups(problems)
        for tunable, value in self.saved_tunables.items():
            try:
                Path("/proc/sys", tunable).write_text(value)
            except OSError as exc:
                problems.append(f"could not restore {tunable}={value}: {exc}")
        self._remove_log_links()
        subprocess.run(["rm", "-rf", "--one-file-system", str(self.base), str(self.state)], check=False)
        self.cluster._api("DELETE", f"/api/v1/nodes/{self.name}")
        if (procs := _processes_naming(f"{PREFIX}{self.run}")):
            problems.append(f"processes still naming {PREFIX}{self.run}: {procs}")
        return problems

    def _delete_pods(self) -> None:
        """Pods first, through the API, so the kubelet itself tears their sandboxes and networks down."""
        try:
            pods = self.cluster.api("GET", "/api/v1/pods", fieldSelector=f"spec.nodeName={self.name}")["items"]
            for pod in pods:
                meta = pod["metadata"]
                self.cluster._api("DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", {"gracePeriodSeconds": 0})
            self._wait_gone(lambda: self.cluster.api("GET", "/api/v1/pods", fieldSelector=f"spec.nodeName={self.name}")["items"], 20)
        except (RuntimeError, OSError):
            pass

    def _end(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def _cgroup_dirs(self) -> list[Path]:
        dirs = []
        for hierarchy in self._hierarchies():
            top = hierarchy / self.cgroup_root.lstrip("/")
            if top.is_dir():
                dirs += [Path(p) for p, _, _ in os.walk(top)]
        return dirs

    def _kill_cgroup_processes(self) -> None:
        def pids() -> list[int]:
            found: set[int] = set()
            for d in self._cgroup_dirs():
                try:
                    found |= {int(x) for x in (d / "cgroup.procs").read_text().split()}
                except OSError:
                    continue
            return sorted(found)

        for pid in pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._wait_gone(pids, 10)

    def _remove_cgroups(self, problems: list[str]) -> None:
        for d in sorted(self._cgroup_dirs(), key=lambda p: len(p.parts), reverse=True):
            try:
                d.rmdir()
            except OSError as exc:
                problems.append(f"cgroup {d}: {exc}")

    def _remove_log_links(self) -> None:
        links = Path("/var/log/containers")
        if links.is_dir():
            for link in links.iterdir():
                if link.is_symlink() and str(os.readlink(link)).startswith(str(self.base)):
                    link.unlink(missing_ok=True)

    @staticmethod
    def _wait_gone(probe: Any, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if not probe():
                    return
            except (RuntimeError, OSError):
                return
            time.sleep(0.1)
