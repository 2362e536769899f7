"""A real `livekit-server` on loopback for tests: free ports, own config, stopped at the end."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import yaml

CACHE_BIN = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "agent-orchestrator" / "bin"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def livekit_binary() -> str:
    for candidate in (os.environ.get("LIVEKIT_SERVER_BIN"), str(CACHE_BIN / "livekit-server"), shutil.which("livekit-server")):
        if candidate and Path(candidate).is_file():
            return candidate
    raise RuntimeError("livekit-server binary not found: run scripts/provision (it builds and caches it)")


T = TypeVar("T")


def wait_ready(proc: subprocess.Popen[bytes], http_url: str, log_tail: Callable[[], str], *, timeout_s: float, what: str, ready: T) -> T:
    """Poll a starting livekit-server's HTTP root until it answers 200 (then return `ready`); fail with its log
    when the process exits first or the time is up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited early:\n{log_tail()}")
        try:
            with urllib.request.urlopen(http_url, timeout=1) as resp:
                if resp.status == 200:
                    return ready
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {timeout_s}s:\n{log_tail()}")


class ServerProcess:
    """Stopping a server process and reading its log's tail: shared by the loopback and the netns LiveKit."""

    proc: subprocess.Popen[bytes] | None
    log_path: Path | None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path and self.log_path.exists() else ""


@dataclass
class LiveKitServer(ServerProcess):
    api_key: str
    api_secret: str
    port: int
    webhook_urls: list[str] = field(default_factory=list)
    # The agents' network gateway: bound too and announced as the node IP, so agent containers on that
    # network reach this server (their own loopback is not the host's).
    agent_gateway: str | None = None
    # The address announced for media (rtc.node_ip); default: the agents' gateway, else loopback. Set only to show
    # what a wrong one does (a swarm node cannot route to it: signalling works, ICE never completes).
    announce: str | None = None
    # Media candidates only on these CIDRs (rtc.ips.includes): on a host with many interfaces (bridges of every
    # engine here) LiveKit otherwise offers each of them, and an agent behind NAT checks them all before the right one.
    media_ips: list[str] | None = None
    # More addresses to listen on (other deployments' agents' gateways on this host).
    also_bind: list[str] = field(default_factory=list)
    # LiveKit's ICE/TCP and UDP ports (0 = a free one, picked at start): a host filter lets agents reach these.
    rtc_tcp_port: int = 0
    rtc_udp_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    extra_keys: dict[str, str] = field(default_factory=dict)  # more API keys of the same server (tenants on own keys)
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, timeout_s: float = 20.0) -> "LiveKitServer":
        workdir = Path(tempfile.mkdtemp(prefix="lk-"))
        self.rtc_tcp_port = self.rtc_tcp_port or free_port()
        self.rtc_udp_port = self.rtc_udp_port or free_port(socket.SOCK_DGRAM)
        cfg = {
            "port": self.port,
            "bind_addresses": ["127.0.0.1", *([self.agent_gateway] if self.agent_gateway else []), *self.also_bind],
            "rtc": {"tcp_port": self.rtc_tcp_port, "udp_port": self.rtc_udp_port, "use_external_ip": False,
                    "node_ip": self.announce or self.agent_gateway or "127.0.0.1"},
            "keys": {self.api_key: self.api_secret, **self.extra_keys},
            "room": {"empty_timeout": 300, "departure_timeout": 20},
            "logging": {"level": "info"},
        }
        if self.media_ips:
            cfg["rtc"]["ips"] = {"includes": list(self.media_ips)}
        if self.webhook_urls:
            cfg["webhook"] = {"api_key": self.api_key, "urls": self.webhook_urls}
        (workdir / "livekit.yaml").write_text(yaml.safe_dump(cfg))
        self.log_path = workdir / "livekit.log"
        self.proc = subprocess.Popen(
            [livekit_binary(), "--config", str(workdir / "livekit.yaml")],
            stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT,
        )
        return wait_ready(self.proc, self.http_url, self.log_tail, timeout_s=timeout_s, what="livekit-server", ready=self)

