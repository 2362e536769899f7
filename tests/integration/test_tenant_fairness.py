"""One tenant cannot slow or lock out the others: the wrong-key throttle behind a proxy, and room waits
(answered from the watch-fed view, capped per client). The real app on the real engine and LiveKit."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from api.app import create_app
from orchestrator.core.apikeys import generate
from orchestrator.core.models import ContainerInfo
from orchestrator.runtime.docker.runtime import DockerRuntime
from orchestrator.settings import Settings
from tests.conftest import CLIENT_ID

pytestmark = [pytest.mark.docker, pytest.mark.livekit]
PROXY, GUESSER, NEIGHBOUR = "10.9.0.5", "203.0.113.9", "198.51.100.7"


@asynccontextmanager
async def served(settings: Settings, *, peer: str = "127.0.0.1", **adapters: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, **adapters)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(peer, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", timeout=60) as c:
            yield c


async def test_behind_a_trusted_proxy_one_guesser_throttles_only_itself(make_settings: Callable[..., Settings]) -> None:
    admin = generate()
    settings = make_settings(admin_api_key=SecretStr(admin), trusted_proxies=[f"{PROXY}/32"], usage_sampling_enabled=False)
    async with served(settings, peer=PROXY) as c:
        wrong = {"X-API-Key": generate(), "X-Forwarded-For": f"1.2.3.4, {GUESSER}"}  # it may prepend anything
        codes = [(await c.get("/api/v1/rooms", headers=wrong)).status_code for _ in range(25)]
        assert codes[0] == 401 and codes[-1] == 429, codes
        body = await c.post("/api/v1/trigger-agent", headers=wrong, json={"agent_slug": "farah", "client_id": CLIENT_ID})
        assert body.status_code == 429  # the body-refusing guard counts the same source
        # Another tenant behind the same proxy: its wrong key is its own 401, its valid key works.
        neighbour = {"X-Forwarded-For": NEIGHBOUR}
        assert (await c.get("/api/v1/rooms", headers={**neighbour, "X-API-Key": generate()})).status_code == 401
        assert (await c.get(f"/api/v1/rooms?client_id={CLIENT_ID}", headers={**neighbour, "X-API-Key": admin})).status_code == 200
        # A valid key is never throttled, not even from the guesser's own address.
        assert (await c.get(f"/api/v1/rooms?client_id={CLIENT_ID}", headers={"X-Forwarded-For": GUESSER, "X-API-Key": admin})).status_code == 200


async def test_forwarded_addresses_from_an_untrusted_peer_are_ignored(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(admin_api_key=SecretStr(generate()), usage_sampling_enabled=False)
    async with served(settings, peer=GUESSER) as c:
        codes = [(await c.get("/api/v1/rooms", headers={"X-API-Key": generate(), "X-Forwarded-For": f"10.0.{i}.1"})).status_code
                 for i in range(25)]
    assert codes[-1] == 429, codes  # rotating a forged header does not escape the throttle


class CountingRuntime(DockerRuntime):
    def __init__(self) -> None:
        super().__init__()
        self.lists = 0

    async def list_managed(self, *, scope: str) -> list[ContainerInfo]:
        self.lists += 1
        return await super().list_managed(scope=scope)


async def test_waits_come_from_the_view_and_are_capped_per_client(make_settings: Callable[..., Settings]) -> None:
    runtime = CountingRuntime()
    settings = make_settings(max_waiters_per_client=2, usage_sampling_enabled=False)
    async with served(settings, runtime=runtime) as c:
        room = f"wait-{secrets.token_hex(3)}"
        made = await c.post("/api/v1/trigger-agent", json={"agent_slug": "farah", "user_id": "u", "client_id": CLIENT_ID, "room_name": room})
        assert made.status_code == 201, made.text  # the tiny image never joins: every wait runs to its timeout
        app_engine = c._transport.app.state.engine  # type: ignore[attr-defined]
        assert await app_engine.informer.wait_synced(timeout_s=20)
        before = runtime.lists
        waits = [asyncio.create_task(c.get(f"/api/v1/rooms/{room}/wait", params={"client_id": CLIENT_ID, "timeout_s": 3}))
                 for _ in range(2)]
        await asyncio.sleep(0.5)  # both are open (they answer after 3 s)
        third = await c.get(f"/api/v1/rooms/{room}/wait", params={"client_id": CLIENT_ID, "timeout_s": 3})
        assert third.status_code == 429 and "max_waiters_per_client" in third.json()["detail"], third.text
        answers = await asyncio.gather(*waits)
        assert [a.status_code for a in answers] == [200, 200] and not any(a.json()["reached"] for a in answers)
        # 2 waits x 3 s at 4 ticks a second were 24 engine lists; from the view, one each at the start.
        assert runtime.lists - before <= 2, runtime.lists - before
        again = await c.get(f"/api/v1/rooms/{room}/wait", params={"client_id": CLIENT_ID, "timeout_s": 0})
        assert again.status_code == 200  # the cap counts open waits only
    runtime.close()
