"""Checks that run before a request body is read: trusted Host (auth off), API key present, body size.

FastAPI reads and parses a body before it resolves dependencies, so the route-level auth comes too
late to stop a 48 MiB body without a key. This plain ASGI middleware answers first, and buffers at
most `limit` bytes of a body (Content-Length or chunked) before the app sees it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Collection, Iterable
from ipaddress import ip_address, ip_network
from typing import Any

from orchestrator.core.apikeys import FailureThrottle, KeyRing

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
WEBHOOK_PATH = "/api/v1/livekit/webhook"
# The webhook route's one answer for every failure (which failure it was would tell which keys tenants use).
WEBHOOK_REFUSED = "webhook refused: it must carry a LiveKit token signed by a key and secret this orchestrator serves"


def host_name(host_header: str) -> str:
    """`[::1]:8000` → `::1`, `localhost:8000` → `localhost` (lowercase, no trailing dot)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0].rstrip(".") if host.count(":") == 1 else host.rstrip(".")


def presented_key(headers: dict[bytes, bytes]) -> str | None:
    """The API key as api/auth.py reads it: `X-API-Key`, else `Authorization: Bearer`."""
    if key := headers.get(b"x-api-key", b"").decode("latin-1").strip():
        return key
    scheme, _, value = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def request_source(peer: str | None, headers: dict[bytes, bytes], *, trusted_proxies: Collection[str]) -> str:
    """Whom wrong keys are counted against: the peer, or, when the peer is a configured trusted proxy, the
    nearest address in X-Forwarded-For that is not one (a client can prepend anything, never append)."""
    if peer is None:
        return "unknown"
    nets = [ip_network(p, strict=False) for p in trusted_proxies]

    def trusted(address: str) -> bool:
        try:
            return any(ip_address(address) in net for net in nets)
        except ValueError:
            return False

    if not trusted(peer):
        return peer
    hops = [h.strip() for h in headers.get(b"x-forwarded-for", b"").decode("latin-1").split(",") if h.strip()]
    for hop in reversed(hops):
        if not trusted(hop):
            return hop[:64]
    return peer


class RequestGuards:
    """Refuses, before any body byte is read: an untrusted Host when auth is off (400), a body on a
    key-protected route without a valid key (401), a webhook without its signature header (401),
    and a body over the limit (413: by Content-Length at once, else as soon as the stream passes it)."""

    def __init__(
        self, app: ASGIApp, *, keyring: Callable[[], KeyRing], throttle: Callable[[], FailureThrottle],
        body_limit: int, webhook_body_limit: int, trusted_hosts: Iterable[str] = LOOPBACK_HOSTS,
        trusted_proxies: Callable[[], Collection[str]] = lambda: (),
        on_refuse: Callable[[Scope, int, str, str], None] | None = None,
    ) -> None:
        self._proxies = trusted_proxies
        self.app = app
        self._keyring = keyring
        self._throttle = throttle
        self._body_limit = body_limit
        self._webhook_limit = webhook_body_limit
        self._trusted = frozenset(trusted_hosts)
        self._on_refuse = on_refuse  # (scope, status, code, detail): every refusal is logged and counted (api/errors)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        ring = self._keyring()
        if not ring.enabled and host_name(headers.get(b"host", b"").decode("latin-1")) not in self._trusted:
            # Without keys, anything that can make a browser send a request here could act as admin
            # (DNS rebinding): only a loopback Host is served.
            await self._deny(scope, send, 400, "untrusted_host", "Host header must be localhost, 127.0.0.1 or [::1] while "
                          "authentication is off; configure API keys to serve other names")
            return
        webhook = scope.get("path") == WEBHOOK_PATH
        limit = self._webhook_limit if webhook else self._body_limit
        length = headers.get(b"content-length")
        has_body = (length is not None and length.strip() != b"0") or b"transfer-encoding" in headers
        if not has_body:
            await self.app(scope, receive, send)
            return
        if webhook and not headers.get(b"authorization"):
            await self._deny(scope, send, 401, "unauthorized", WEBHOOK_REFUSED, authenticate=True)
            return
        if not webhook and ring.enabled and not await self._key_ok(ring, headers, scope, send):
            return
        if length is not None and (not length.strip().isdigit() or int(length) > limit):
            await self._deny(scope, send, 413, "payload_too_large", f"request body over {limit} bytes")
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away; the app sees an empty body and its disconnect below
            body += message.get("body", b"")
            if len(body) > limit:
                await self._deny(scope, send, 413, "payload_too_large", f"request body over {limit} bytes")
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


    async def _key_ok(self, ring: KeyRing, headers: dict[bytes, bytes], scope: Scope, send: Send) -> bool:
        """As api/auth.py: no key 401; a valid key passes; a wrong one from a source with too many is 429, else 401
        and counted. A valid key is never throttled: keys are random 256-bit, so guessing is hopeless anyway,
        and a throttled address may be a proxy that others share."""
        if (key := presented_key(headers)) is None:
            await self._deny(scope, send, 401, "unauthorized", "an API key is required: send `Authorization: Bearer <key>` "
                          "or `X-API-Key: <key>`", authenticate=True)
            return False
        if ring.verify(key) is not None:
            return True
        peer = scope["client"][0] if scope.get("client") else None
        source = request_source(peer, headers, trusted_proxies=self._proxies())
        throttle = self._throttle()
        if (wait := throttle.retry_after(source)) is not None:
            await self._deny(scope, send, 429, "limit_exceeded", "too many wrong API keys from this address; wait before trying again",
                          extra=[(b"retry-after", str(math.ceil(wait)).encode())])
            return False
        throttle.failed(source)
        await self._deny(scope, send, 401, "unauthorized", "the API key is not valid", authenticate=True)
        return False

    async def _deny(self, scope: Scope, send: Send, status: int, code: str, detail: str, **kwargs: Any) -> None:
        if self._on_refuse is not None:
            self._on_refuse(scope, status, code, detail)
        await _refuse(send, status, code, detail, **kwargs)


async def _refuse(
    send: Send, status: int, code: str, detail: str, *, authenticate: bool = False,
    extra: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    body = json.dumps({"detail": detail, "code": code}, separators=(",", ":")).encode()  # as the app answers
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
    headers += list(extra)
    if authenticate:
        headers.append((b"www-authenticate", b'Bearer realm="orchestrator"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
