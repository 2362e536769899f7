"""A throwaway Docker daemon of the test's own (socket, data root, exec root), to stop and start at will.

The shared engine runs other people's tests: restarting it would stop their containers. A second
dockerd, started the way scripts/provision starts the first (a plain background process), in a network
namespace of its own, gives a drill a daemon it can take down without touching anyone else's.
Its containers use `network_mode=host`, i.e. that namespace: fine for the tiny image, which talks to no one.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import docker

from devtools.docker_helpers import TINY_IMAGE


def runsc_config(directory: Path, *, runsc: str | None = None) -> Path:
    """A daemon.json for a private dockerd with gVisor's `runsc` registered, as the README tells operators to do.
    `--network=host`: gVisor uses the network namespace Docker made for the container (see environment notes).
    `runsc`: another build than the one on PATH (e.g. a newer release with the systrap platform) to compare."""
    runsc = runsc or shutil.which("runsc")
    assert runsc, "runsc (gVisor) not installed: run scripts/provision"  # missing is a failure, not a skip
    config = directory / "daemon.json"
    config.write_text(json.dumps({"runtimes": {"runsc": {"path": runsc, "runtimeArgs": ["--network=host"]}}}))
    return config


class PrivateDockerd:
    def __init__(self, name: str, *, live_restore: bool = True, extra_args: tuple[str, ...] = ()) -> None:
        self.name = name
        self.sock = Path(f"/run/{name}.sock")
        self.data_root = Path(f"/var/lib/{name}")
        self.exec_root = Path(f"/run/{name}")  # short: containerd's socket path lives under it
        self.log_path = Path(f"/tmp/{name}.log")
        self.live_restore = live_restore
        self.extra_args = extra_args  # e.g. ("--config-file", PATH) to register runtimes such as runsc
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.sock}"

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, timeout=30)

    def start(self, *, timeout_s: float = 30) -> "PrivateDockerd":
        # Its own network namespace: a dockerd started with `--bridge none` deletes the host's `docker0`
        # (the shared engine's default bridge) at start-up; in a fresh namespace there is none to delete.
        cmd = ["unshare", "--net", "dockerd", "--host", self.url, "--data-root", str(self.data_root), "--exec-root", str(self.exec_root),
               "--pidfile", f"/run/{self.name}.pid", "--bridge", "none", "--iptables=false", "--ip-masq=false"]
        if self.live_restore:
            cmd.append("--live-restore")
        cmd.extend(self.extra_args)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while True:  # wait for `docker info` to answer, as after any daemon start
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd {self.name} exited:\n{self.log_tail()}")
            try:
                with closing(self.client()) as c:
                    c.info()
                return self
            except docker.errors.DockerException:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"dockerd {self.name} not answering after {timeout_s}s:\n{self.log_tail()}") from None
                time.sleep(0.1)

    def stop(self, *, timeout_s: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def load_image(self, source: docker.DockerClient, tag: str) -> None:
        """Copy an image from the shared engine (no registry here)."""
        data = b"".join(source.images.get(tag).save(named=True))
        with closing(self.client()) as c:
            c.images.load(data)

    def destroy(self) -> None:
        """Remove every container, stop the daemon, unmount what it mounted and delete its files."""
        if self.proc is not None and self.proc.poll() is not None:
            try:
                self.start()
            except RuntimeError:
                pass
        if self.proc is not None and self.proc.poll() is None:
            try:
                with closing(self.client()) as c:
                    for row in c.api.containers(all=True):
                        c.api.remove_container(row["Id"], force=True)
            except docker.errors.DockerException:
                pass
        self.stop()
        for mount in (self.exec_root / "netns" / "default", self.data_root):
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)
        for path in (self.data_root, self.exec_root):
            shutil.rmtree(path, ignore_errors=True)
        for leftover in (self.sock, Path(f"/run/{self.name}.pid")):
            if leftover.exists():
                os.unlink(leftover)

    def log_tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""


@contextmanager
def private_engine(prefix: str, source: docker.DockerClient, *, image: str = TINY_IMAGE, **options: object) -> Iterator[PrivateDockerd]:
    """A private dockerd with `image` loaded from `source`; always destroyed: containers, daemon, mounts, files."""
    assert shutil.which("dockerd"), "dockerd is installed by scripts/provision"
    d = PrivateDockerd(f"{prefix}-{secrets.token_hex(3)}", **options)  # type: ignore[arg-type]
    try:
        d.start()
        d.load_image(source, image)
        yield d
    finally:
        d.destroy()
