"""The reuse answer next to no-op requests of the same server, interleaved: before the user joins (a page reload) and
with a human in the call. Goal: within 1.5× a no-op request (the cached /openapi.json, a 404)."""

from __future__ import annotations

import asyncio
import time

import httpx

from devtools.agent_room import Participant

from bench.stats import ratio, summary


async def _timed(http: httpx.AsyncClient, method: str, url: str, **kw: object) -> float:
    t0 = time.perf_counter()
    r = await http.request(method, url, **kw)  # type: ignore[arg-type]
    took = time.perf_counter() - t0
    if r.status_code >= 500:
        raise RuntimeError(f"{method} {url}: {r.status_code} {r.text[:200]}")
    return took


async def _series(http: httpx.AsyncClient, url: str, trigger: dict[str, str], runs: int) -> dict[str, object]:
    reuse, openapi, missing = [], [], []
    for _ in range(runs):
        reuse.append(await _timed(http, "POST", f"{url}/api/v1/trigger-agent", json=trigger))
        openapi.append(await _timed(http, "GET", f"{url}/openapi.json"))
        missing.append(await _timed(http, "GET", f"{url}/no-such-path"))
    return {"reuse": {**summary(reuse), "ratio_to_openapi": ratio(reuse, openapi), "ratio_to_404": ratio(reuse, missing)},
            "openapi_json": summary(openapi), "not_found": summary(missing)}


async def measure(*, url: str, livekit_url: str, body: dict[str, str], room: str, runs: int) -> dict[str, object]:
    trigger = {**body, "room_name": room}
    async with httpx.AsyncClient(timeout=60) as http:
        made = (await http.post(f"{url}/api/v1/trigger-agent", json=trigger)).json()
        deadline = time.monotonic() + 30
        while (await http.post(f"{url}/api/v1/trigger-agent", json=trigger)).status_code != 200:
            if time.monotonic() > deadline:
                raise TimeoutError("the trigger never answered `reused`")
            await asyncio.sleep(0.1)
        before_join = await _series(http, url, trigger, runs)
        async with Participant(livekit_url, made["user_token"]):
            await _until_in_call(http, url, body["client_id"], room)
            in_call = await _series(http, url, trigger, runs)
        await http.post(f"{url}/api/v1/admin/rooms/{body['client_id']}/{room}/close")
    return {"before_join": before_join, "in_call": in_call}


async def _until_in_call(http: httpx.AsyncClient, url: str, client_id: str, room: str) -> None:
    """The orchestrator tracks the room as in a call (the join came by webhook or a pass)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = await http.get(f"{url}/api/v1/rooms/{room}", params={"client_id": client_id})
        if got.status_code == 200 and got.json().get("state") == "active":
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"room {room} never became active")


def markdown(r: dict) -> list[str]:
    lines = ["| reuse answer | p50 / p90 | /openapi.json p50 | 404 p50 | ratio to /openapi.json |", "|---|---|---|---|---|"]
    for label, key in (("before the user joins (page reload)", "before_join"), ("with a human in the call", "in_call")):
        s = r[key]
        lines.append(f"| {label} | {s['reuse']['median_ms']} / {s['reuse']['p90_ms']} ms | {s['openapi_json']['median_ms']} ms | "
                     f"{s['not_found']['median_ms']} ms | {s['reuse']['ratio_to_openapi']} |")
    return lines
