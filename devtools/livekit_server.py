"""A real `livekit-server` on loopback for tests: free ports, own config, stopped at the end."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass
class LiveKitServer:
    api_key: str
    api_secret: str
    port: int
    webhook_urls: list[str] = field(default_factory=list)
    # The agents' network gateway: bound too and announced as the node IP, so agent containers on that
    # network reach this server (their own loopback is not the host's).
    agent_gateway: str | None = None
    # More addresses to listen on (other deployments' agents' gateways on this host).
    also_bind: list[str] = field(default_factory=list)
    # LiveKit's ICE/TCP and UDP ports (0 = a free one, picked at start): a host filter lets agents reach these.
    rtc_tcp_port: int = 0
    rtc_udp_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
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
                    "node_ip": self.agent_gateway or "127.0.0.1"},
            "keys": {self.api_key: self.api_secret},
            "room": {"empty_timeout": 300, "departure_timeout": 20},
            "logging": {"level": "info"},
        }
        if self.webhook_urls:
            cfg["webhook"] = {"api_key": self.api_key, "urls": self.webhook_urls}
        (workdir / "livekit.yaml").write_text(yaml.safe_dump(cfg))
        self.log_path = workdir / "livekit.log"
        self.proc = subprocess.Popen(
            [livekit_binary(), "--config", str(workdir / "livekit.yaml")],
            stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"livekit-server exited early:\n{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.http_url, timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"livekit-server not ready after {timeout_s}s:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_text()[-n:] if self.log_path and self.log_path.exists() else ""
