"""A real `orchestrator serve`: bodies are refused before they are read (no key, too large), and with auth off
only a loopback Host is served (DNS rebinding cannot reach the routes from a web page)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from orchestrator.core.apikeys import generate
from tests.conftest import CLIENT_ID
from devtools.docker_helpers import TINY_IMAGE
from devtools.serve import Served, serve_process

pytestmark = [pytest.mark.docker]
MiB = 1024 * 1024


def rss_mib(served: Served) -> float:
    for line in Path(f"/proc/{served.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def raw_post(url: str, path: str, *, size: int, headers: dict[str, str], chunked: bool = False) -> tuple[int, float]:
    """POST `size` bytes of JSON-ish body over a plain socket; returns (status, seconds). The server may answer
    (and close) before the body is sent: that is the point, so a broken pipe while sending is fine."""
    host, port = url.removeprefix("http://").split(":")
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        piece = b'{"agent_slug": "' + b"a" * (MiB - 32)
        try:
            sent = 0
            while sent < size:
                chunk = piece[: size - sent]
                s.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if chunked else chunk)
                sent += len(chunk)
            if chunked:
                s.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        try:
            while b"\r\n" not in answer:
                data = s.recv(4096)
                if not data:
                    break
                answer += data
        except ConnectionResetError:
            pass
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0
    return status, time.monotonic() - started


@pytest.fixture
def secured(scope: str, tenants_file: Path) -> Iterator[tuple[Served, str]]:
    key = generate()
    with serve_process(scope=scope, tenants_file=tenants_file, image=TINY_IMAGE, ORCH_ADMIN_API_KEY=key,
                       ORCH_RECONCILE_ENABLED="false", ORCH_USAGE_SAMPLING_ENABLED="false") as served:
        yield served, key


def test_big_bodies_are_refused_before_they_are_read(secured: tuple[Served, str]) -> None:
    served, key = secured
    before = rss_mib(served)
    for what, path, headers, chunked, wanted in [
        ("no key", "/api/v1/trigger-agent", {}, False, {401, 413}),
        ("no key, chunked", "/api/v1/trigger-agent", {}, True, {401, 413}),
        ("wrong key", "/api/v1/trigger-agent", {"X-API-Key": generate()}, False, {401, 413}),
        ("valid key", "/api/v1/trigger-agent", {"X-API-Key": key}, False, {413}),
        ("valid key, chunked", "/api/v1/trigger-agent", {"Authorization": f"Bearer {key}"}, True, {413}),
        ("webhook, no signature", "/api/v1/livekit/webhook", {}, False, {401, 413}),
        ("webhook, chunked", "/api/v1/livekit/webhook", {"Authorization": "x.y.z"}, True, {401, 413}),
    ]:
        status, took = raw_post(served.url, path, size=48 * MiB, headers=headers, chunked=chunked)
        assert status in wanted, (what, status, served.log_tail())
        print(f"{what}: {status} in {took:.2f}s, RSS {rss_mib(served):.0f} MiB (before: {before:.0f} MiB)")
    grown = rss_mib(served) - before
    assert grown < 24, f"RSS grew by {grown:.0f} MiB while refusing 7 × 48 MiB bodies"

    # Limits are exact: a webhook body up to 1 MiB is read (and then refused for its signature).
    status, _ = raw_post(served.url, "/api/v1/livekit/webhook", size=MiB - 64, headers={"Authorization": "x.y.z"})
    assert status == 401
    status, _ = raw_post(served.url, "/api/v1/trigger-agent", size=80 * 1024, headers={"X-API-Key": key})
    assert status == 413
    # A normal request with the key still works.
    r = httpx.post(f"{served.url}/api/v1/trigger-agent", headers={"X-API-Key": key}, timeout=30,
                   json={"agent_slug": "nobody", "user_id": "u", "client_id": CLIENT_ID, "room_name": "r"})
    assert r.status_code == 404, r.text


def test_auth_off_serves_loopback_hosts_only(scope: str, tenants_file: Path) -> None:
    with serve_process(scope=scope, tenants_file=tenants_file, image=TINY_IMAGE,
                       ORCH_RECONCILE_ENABLED="false", ORCH_USAGE_SAMPLING_ENABLED="false") as served:
        port = served.url.rsplit(":", 1)[1]
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}"):
            r = httpx.get(f"{served.url}/api/v1/admin/rooms", headers={"Host": host}, timeout=10)
            assert r.status_code == 200, (host, r.text)
        for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.nip.io:{port}", f"localhost.evil.example:{port}", ""):
            for method, path in (("GET", "/api/v1/admin/rooms"), ("POST", "/api/v1/trigger-agent"), ("GET", "/dashboard")):
                r = httpx.request(method, f"{served.url}{path}", headers={"Host": host}, timeout=10,
                                  json={"agent_slug": "farah", "user_id": "u", "client_id": CLIENT_ID} if method == "POST" else None)
                assert r.status_code == 400 and "Host" in r.json()["detail"], (host, path, r.status_code, r.text)


def test_wrong_keys_with_bodies_are_throttled_like_the_rest(secured: tuple[Served, str]) -> None:
    """Refusing before the body must not open a way around the wrong-key throttle of api/auth.py."""
    served, _ = secured
    body = {"agent_slug": "farah", "user_id": "u", "client_id": CLIENT_ID, "room_name": "r"}
    codes = [httpx.post(f"{served.url}/api/v1/trigger-agent", json=body, headers={"X-API-Key": generate()}, timeout=10).status_code
             for _ in range(25)]
    assert codes[0] == 401 and codes[-1] == 429, codes
