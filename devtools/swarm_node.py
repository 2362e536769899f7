"""One node of the swarm harness: a dockerd of its own in a network namespace of its own, and the shell helpers.

Its engine's iptables rules live in the node's namespace only (iptables are per namespace): the host's engine,
its docker0 and its rules are never touched, and the node NATs its containers' egress as a real host would
(agents on an overlay leave through its docker_gwbridge).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import docker

PREFIX = "sw-"


def sh(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run one command; a failure raises with the command and its stderr (the report names both)."""
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(args)}` failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def processes_naming(needle: str) -> list[tuple[int, str]]:
    """Processes whose command line mentions `needle` (a node's exec root): leftovers after teardown."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmd:
            found.append((int(entry.name), cmd.strip()))
    return found


def _mounts_under(*roots: Path) -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(point == str(r) or point.startswith(f"{r}/") for r in roots):
            points.append(point)
    return sorted(set(points), key=len, reverse=True)  # deepest first


@dataclass
class Node:
    run: str
    index: int
    address: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return f"{PREFIX}{self.run}-n{self.index}"

    @property
    def netns(self) -> str:
        return self.name

    @property
    def sock(self) -> Path:
        return Path(f"/run/{self.name}.sock")

    @property
    def url(self) -> str:
        return f"unix://{self.sock}"

    @property
    def data_root(self) -> Path:
        return Path(f"/var/lib/{self.name}")

    @property
    def exec_root(self) -> Path:
        return Path(f"/run/{self.name}")  # short: containerd's socket path lives under it

    @property
    def pidfile(self) -> Path:
        return Path(f"/run/{self.name}.pid")

    @property
    def config_file(self) -> Path:
        return Path(f"/run/{self.name}.json")

    @property
    def log_path(self) -> Path:
        return Path(f"/tmp/{self.name}.log")

    def client(self, *, timeout: int = 30) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, timeout=timeout)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, *, timeout_s: float = 40) -> None:
        # The host's /etc/docker/daemon.json must not apply (live-restore there would refuse swarm mode).
        self.config_file.write_text("{}")
        # Data root on a tmpfs: loading the agent image onto three nodes and deleting ~60k files again
        # took minutes on this disk (unlink ~1.6 ms each); in memory both take seconds.
        self.data_root.mkdir(parents=True, exist_ok=True)
        if not _mounts_under(self.data_root):
            sh("mount", "-t", "tmpfs", "-o", "size=6g,mode=0711", "tmpfs", str(self.data_root))
        dockerd = (
            f"exec dockerd --config-file {self.config_file} --host {self.url} --data-root {self.data_root}"
            f" --exec-root {self.exec_root} --pidfile {self.pidfile} --iptables=true"
        )
        # nsenter --net (not `ip netns exec`, which remounts /sys: "Devices cgroup isn't mounted").
        cmd = ["nsenter", f"--net=/run/netns/{self.netns}", "unshare", "--uts", "sh", "-c", f"hostname {self.name} && {dockerd}"]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd of {self.name} exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                with closing(self.client(timeout=5)) as c:
                    c.ping()
                break
            except docker.errors.DockerException:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"dockerd of {self.name} not answering after {timeout_s}s:\n{self.log_tail()}") from None
                time.sleep(0.1)
        # Its containerd must be its own (supervised, under its exec root), never a system one shared with the main engine.
        if not processes_naming(f"{self.exec_root}/containerd/containerd.toml"):
            raise RuntimeError(f"dockerd of {self.name} did not start its own containerd under {self.exec_root}")

    def stop(self, *, timeout_s: float = 30) -> None:
        """SIGTERM by pidfile (a manager takes ~9 s), SIGKILL after `timeout_s`."""
        pid = self._pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout_s
        while _alive(pid) and time.monotonic() < deadline:
            if self.proc is not None and self.proc.pid == pid:
                try:
                    self.proc.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    pass
            else:
                time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
            if self.proc is not None and self.proc.pid == pid:
                self.proc.wait()

    def _pid(self) -> int | None:
        if self.proc is not None and self.proc.poll() is None:
            return self.proc.pid
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def log_tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""
