"""The dashboard in a real headless Chromium (Debian's), against a real orchestrator, Docker and livekit-server.

Every action is driven from the keyboard only (Tab, typing, Enter): the API key, Test Agent (which triggers an
agent and joins its room from the browser with the LiveKit JS client), Leave call, the filters and Close. axe-core
(npm, scripts/fetch-test-assets) checks each state of the page against WCAG 2.2 AA and must find nothing. The
500-agent render test is the one place with a stub: the real page and static files, with a stub admin API at its
HTTP boundary (500 real containers would measure Docker, not the page). Screenshots go to tests/screenshots/
(git-ignored); a failing test also dumps the browser console and the servers' logs.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Response
from playwright.async_api import Browser, Page, async_playwright, expect

from api.routes.dashboard import mount_static, router as dashboard_router
from devtools.livekit_server import LiveKitServer, free_port
from devtools.orchestrator_server import OrchestratorServer, start_orchestrator
from orchestrator.core.apikeys import entry_yaml, generate
from orchestrator.settings import Settings
from tests.conftest import CLIENT_ID, OTHER_CLIENT_ID, write_tenants

SHOTS = Path(__file__).resolve().parents[1] / "screenshots"
AXE_JS = Path(__file__).resolve().parent / "vendor" / "axe.min.js"  # scripts/fetch-test-assets (pinned, git-ignored)
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]  # WCAG 2.2 level AA, all of it axe can check
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # WebRTC to a livekit-server on 127.0.0.1: Chromium skips loopback candidates unless told otherwise.
    "--allow-loopback-in-peer-connection",
    # A fake microphone, granted without a prompt: the Test Agent call publishes audio like a real user.
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
]
GRACE_S = 30.0
AGENT_IMAGE = "agent-orchestrator/agent:latest"  # the real agent: the Test Agent call meets it in the room
FLEET = 500


# ---- fixtures --------------------------------------------------------------------------------


async def _orchestrator(scope: str, tmp_path: Path, livekit: LiveKitServer, port: int, *, grace_s: float) -> AsyncIterator[tuple[OrchestratorServer, str]]:
    admin = generate()
    (tmp_path / "keys.yaml").write_text("keys:\n" + entry_yaml(name="dashboard-test", key=admin, client_id=None))
    settings = Settings(
        scope=scope, tenants_file=write_tenants(tmp_path / "tenants.yaml", livekit), agent_image=AGENT_IMAGE,
        agent_memory="256m", agent_cpus=0.5, agent_stop_timeout_s=2, port=port, grace_period_s=grace_s,
        room_empty_timeout_s=max(300, int(grace_s)), agent_startup_timeout_s=0, api_keys_file=tmp_path / "keys.yaml",
        usage_sample_interval_s=1,
    )
    srv = await start_orchestrator(settings)
    yield srv, admin
    await srv.stop()


@pytest.fixture
async def orchestrator(scope: str, tmp_path: Path, hooked_livekit: LiveKitServer, orch_port: int) -> AsyncIterator[tuple[OrchestratorServer, str]]:
    async for o in _orchestrator(scope, tmp_path, hooked_livekit, orch_port, grace_s=GRACE_S):
        yield o


@pytest.fixture
async def fleet_orchestrator(scope: str, tmp_path: Path, hooked_livekit: LiveKitServer, orch_port: int) -> AsyncIterator[tuple[OrchestratorServer, str]]:
    """Rooms whose agents wait alone (no human): a grace period longer than the test, so none closes under it."""
    async for o in _orchestrator(scope, tmp_path, hooked_livekit, orch_port, grace_s=600):
        yield o


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield b
        await b.close()


async def _page(browser: Browser, request: pytest.FixtureRequest, logs: list[tuple[str, Any]]) -> AsyncIterator[Page]:
    ctx = await browser.new_context(viewport={"width": 1400, "height": 1000})
    p = await ctx.new_page()
    console: list[str] = []
    p.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    p.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    yield p
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        SHOTS.mkdir(exist_ok=True)
        await p.screenshot(path=str(SHOTS / f"failure-{request.node.name}.png"), full_page=True)
        print("\n==== browser console ====\n" + "\n".join(console[-60:]))
        for name, source in logs:
            print(f"\n==== {name} ====\n{source.log_tail()}")
    await ctx.close()


@pytest.fixture
async def page(browser: Browser, request: pytest.FixtureRequest, hooked_livekit: LiveKitServer) -> AsyncIterator[Page]:
    async for p in _page(browser, request, [("livekit-server log", hooked_livekit)]):
        yield p


@pytest.fixture
async def bare_page(browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[Page]:
    """A page without livekit-server behind it (the stubbed fleet)."""
    async for p in _page(browser, request, []):
        yield p


# ---- helpers ---------------------------------------------------------------------------------


async def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(SHOTS / name), full_page=True)


async def axe_violations(page: Page, *, exclude: list[str] | None = None) -> list[dict[str, Any]]:
    """axe-core's WCAG 2.2 AA violations of the page as it is now (injected once per document)."""
    assert AXE_JS.is_file(), f"{AXE_JS} is missing: run scripts/fetch-test-assets (scripts/provision does)"
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        await page.add_script_tag(path=str(AXE_JS))
    return await page.evaluate(
        """async ([tags, exclude]) => (await axe.run({ include: [["html"]], exclude: exclude.map((s) => [s]) },
                                                    { runOnly: { type: "tag", values: tags }, resultTypes: ["violations"] }))
            .violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,
                                      nodes: v.nodes.slice(0, 5).map((n) => n.target.join(" ") + ": " + n.failureSummary) }))""",
        [AXE_TAGS, exclude or []],
    )


async def assert_accessible(page: Page, where: str, *, exclude: list[str] | None = None) -> None:
    violations = await axe_violations(page, exclude=exclude)
    assert violations == [], f"axe found WCAG 2.2 AA violations ({where}):\n" + "\n".join(
        f"- {v['id']} ({v['impact']}): {v['help']}\n    " + "\n    ".join(v["nodes"]) for v in violations)


async def focused(page: Page) -> dict[str, str | None]:
    return await page.evaluate("""() => { const a = document.activeElement;
        return { tag: a.tagName.toLowerCase(), id: a.id || null, name: a.getAttribute("aria-label") || a.textContent.trim() }; }""")


async def tab_to(page: Page, *, id: str | None = None, name: str | None = None, limit: int = 60, back: bool = False) -> int:
    """Press Tab (Shift+Tab with back) until the element with this id or accessible name has focus: proof
    that it is in the tab order. Returns how many presses it took."""
    for presses in range(1, limit + 1):
        await page.keyboard.press("Shift+Tab" if back else "Tab")
        f = await focused(page)
        if (id is not None and f["id"] == id) or (name is not None and f["name"] == name):
            return presses
    raise AssertionError(f"{id or name!r} never got focus in {limit} Tab presses (last: {await focused(page)})")


async def redraws(page: Page) -> int:
    return int(await page.evaluate("Number(document.body.dataset.redraws || 0)"))


async def wait_redraws(page: Page, n: int, timeout_ms: float = 15_000) -> None:
    """Wait until n more periodic redraws (2 s polls) have been drawn and painted."""
    target = await redraws(page) + n
    await page.wait_for_function("(t) => Number(document.body.dataset.redraws || 0) >= t", arg=target, timeout=timeout_ms)


def grace_seconds(text: str) -> int:
    m = re.fullmatch(r"(\d+)s", text.strip())
    assert m, f"grace cell shows {text!r}"
    return int(m.group(1))


def contrast(fg: str, bg: str) -> float:
    """WCAG contrast ratio of two CSS rgb()/rgba() colours (opaque ones: the page uses no translucent text)."""
    def lum(css: str) -> float:
        r, g, b = (int(x) / 255 for x in re.findall(r"[\d.]+", css)[:3])
        lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    hi, lo = sorted((lum(fg), lum(bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


async def use_key_by_keyboard(page: Page, key: str) -> None:
    """Tab from the top of the page: the skip link comes first, then the API key field; Enter submits it."""
    await page.evaluate("document.activeElement && document.activeElement.blur()")
    await page.keyboard.press("Tab")
    assert (await focused(page))["name"] == "Skip to the fleet"
    await tab_to(page, id="api-key", limit=3)
    await page.keyboard.type(key)
    await page.keyboard.press("Enter")


# ---- the real orchestrator --------------------------------------------------------------------


@pytest.mark.docker
@pytest.mark.livekit
async def test_keyboard_only_test_agent_grace_countdown_and_close(
    orchestrator: tuple[OrchestratorServer, str], page: Page, hooked_livekit: LiveKitServer, docker_client: docker.DockerClient
) -> None:
    srv, admin = orchestrator
    room = f"dash-{secrets.token_hex(3)}"
    await page.goto(f"{srv.base_url}/dashboard")
    # Without a key the admin API answers 401 and the page says what it needs.
    await expect(page.locator("#banner")).to_contain_text("API key", timeout=10_000)
    await assert_accessible(page, "no key yet, banner shown")
    await use_key_by_keyboard(page, admin)
    await expect(page.locator("#banner")).to_be_hidden(timeout=10_000)
    await expect(page.locator("#live")).to_have_text(re.compile("events: live"), timeout=10_000)
    assert await page.evaluate("sessionStorage.getItem('orch_api_key')") == admin
    await expect(page.locator("#announcer")).to_have_text("API key set.")
    await expect(page.locator("#stat-engine")).to_have_text("docker")
    await expect(page.locator("#pool-note")).to_contain_text("No pool on this orchestrator")  # the tests run with pool_max 0
    await expect(page.locator("#dispatch-note")).to_contain_text("LiveKit dispatch is off")
    await assert_accessible(page, "key set, empty fleet")
    await shot(page, "01-dashboard-empty.png")

    # Test Agent from the keyboard: trigger through the API, then join the room from the browser.
    await tab_to(page, id="test-client")
    await page.keyboard.type(CLIENT_ID)
    await tab_to(page, id="test-agent", limit=1)
    await page.keyboard.type("farah")
    await tab_to(page, id="test-room", limit=1)
    await page.keyboard.type(room)
    await tab_to(page, id="test-agent-btn", limit=1)
    started = time.monotonic()
    await page.keyboard.press("Enter")
    await expect(page.locator("body")).to_have_attribute("data-call", room, timeout=30_000)
    joined_s = time.monotonic() - started
    assert (await focused(page))["id"] == "test-agent-btn", "starting the call took keyboard focus away"
    row = page.locator(f'#rooms tr[data-room="{room}"][data-client="{CLIENT_ID}"]')
    await expect(row).to_be_visible(timeout=10_000)
    # The real agent image joins as agent-farah; the browser sees it in its call.
    await expect(row).to_have_attribute("data-state", "active", timeout=30_000)
    await expect(row.locator(".state")).to_have_text("●active")  # text and icon, not colour alone
    await expect(row.locator(".humans")).to_contain_text("dashboard-")
    await expect(row.locator(".agents")).to_contain_text("agent-farah")
    await expect(page.locator("#call-participants")).to_contain_text("agent-farah")
    container = page.locator("#agents tr[data-container]", has_text=room)
    await expect(container).to_have_count(1)
    await expect(container.locator(".engine")).to_have_text("docker")
    await expect(container.locator(".node")).to_have_text("—")  # one Docker engine: no node to show
    await expect(container.locator(".mem")).to_contain_text("MiB", timeout=10_000)  # from the background sampler
    await expect(page.locator("#events li[data-kind=trigger]")).to_contain_text(room)
    await expect(page.locator("#events li[data-kind=room]").first).to_be_visible()
    await assert_accessible(page, "in a call, one active room")
    await shot(page, "02-room-active-in-call.png")

    # Leave from the keyboard: the next stop after Test Agent; focus returns to Test Agent when Leave disables.
    await tab_to(page, id="leave-btn", limit=1)
    await page.keyboard.press("Enter")
    await expect(row).to_have_attribute("data-state", "grace_period", timeout=15_000)
    assert (await focused(page))["id"] == "test-agent-btn"
    await expect(page.locator("#announcer")).to_contain_text("is now grace period", timeout=5_000)
    first = grace_seconds(await row.locator(".grace").inner_text())
    assert 0 < first <= GRACE_S
    deadline = time.monotonic() + 5
    while grace_seconds(await row.locator(".grace").inner_text()) >= first:
        assert time.monotonic() < deadline, "the grace countdown did not move"
        await asyncio.sleep(0.2)
    await assert_accessible(page, "room in its grace period")
    await shot(page, "03-room-grace-countdown.png")

    # Tab to this room's Close (its own name), survive two redraws there, then Enter (confirm accepted).
    await tab_to(page, name=f"Close room {room}")
    await wait_redraws(page, 2)
    assert (await focused(page))["name"] == f"Close room {room}", "a redraw dropped keyboard focus"
    page.once("dialog", lambda d: asyncio.ensure_future(d.accept()))
    await page.keyboard.press("Enter")
    await expect(row).to_have_count(0, timeout=15_000)
    # The row went with the focused button: focus lands on the Rooms heading, not on <body>.
    assert (await focused(page))["id"] == "rooms-title"
    await expect(page.locator("#announcer")).to_contain_text(f"Closed room {room}", timeout=5_000)
    names = [c.name for c in docker_client.containers.list(all=True, filters={"label": f"agent-orchestrator.room={room}"})]
    assert names == []
    await expect(page.locator("#events li[data-kind=reconcile]", has_text="closed by an operator").first).to_be_visible()
    await shot(page, "04-room-closed.png")
    print(f"\nTest Agent (Enter) → in call from the browser: {joined_s:.2f}s")


@pytest.mark.docker
@pytest.mark.livekit
async def test_the_last_starts_timeline_opens_from_the_keyboard_and_survives_redraws(
    orchestrator: tuple[OrchestratorServer, str], page: Page
) -> None:
    """A real trigger's start: its row (launch, outcome, total), its stages drawn to scale and, behind "Stages", listed as text."""
    srv, admin = orchestrator
    room = f"timeline-{secrets.token_hex(3)}"
    async with httpx.AsyncClient(base_url=srv.base_url, headers={"Authorization": f"Bearer {admin}"}, timeout=60) as api:
        made = await api.post("/api/v1/trigger-agent", json={
            "agent_slug": "farah", "client_id": CLIENT_ID, "room_name": room, "user_id": "u-timeline", "mode": "voice"})
        assert made.status_code == 201, made.text
        deadline = time.monotonic() + 60
        while True:  # the join comes from LiveKit's webhook once the real agent is in the room
            starts = (await api.get("/api/v1/starts", params={"room": room})).json()["starts"]
            if starts and starts[0]["stages"][-1]["stage"] == "agent_joined" and starts[0]["stages"][-1]["outcome"] == "ok":
                break
            assert time.monotonic() < deadline, f"the agent's join never reached the start's timeline: {starts}"
            await asyncio.sleep(0.2)
    start = starts[0]
    await page.goto(f"{srv.base_url}/dashboard")
    await use_key_by_keyboard(page, admin)
    row = page.locator(f'#starts tbody tr[data-room="{room}"]')
    await expect(row).to_have_count(1, timeout=15_000)
    await expect(row.locator(".launch")).to_have_text("cold")
    await expect(row.locator(".outcome")).to_have_text("●created")  # an icon and the word, not colour alone
    await expect(row.locator(".total")).to_have_text(re.compile(r"^\d+(\.\d+)? m?s$"))
    await expect(row.locator(".bars .bar")).to_have_count(5)
    assert await row.locator(".bars").get_attribute("aria-hidden") == "true"  # decoration: the list says it in text
    stage_list = row.locator(".stage-list")
    await expect(stage_list).to_be_hidden()
    await assert_accessible(page, "the last starts, stage lists closed")

    # Keyboard only: Tab to this start's own "Stages" button, open it, and stay there across two redraws.
    name = f"Stages of start {start['id']}: trigger farah in {room}"
    await tab_to(page, name=name, limit=80)
    toggle = row.locator("button.stage-toggle")
    assert await toggle.get_attribute("aria-expanded") == "false"
    await page.keyboard.press("Enter")
    await expect(toggle).to_have_attribute("aria-expanded", "true")
    await expect(stage_list).to_be_visible()
    items = stage_list.locator("li")
    await expect(items).to_have_count(5)
    assert [await items.nth(i).get_attribute("data-stage") for i in range(5)] == [m["stage"] for m in start["stages"]]
    await expect(items.nth(0)).to_contain_text("tenant lookup")
    await expect(items.nth(4)).to_contain_text(re.compile(r"agent joined \d+(\.\d+)? m?s ✓ok at \+"))
    await wait_redraws(page, 2)
    assert (await focused(page))["name"] == name, "a redraw dropped keyboard focus"
    await expect(toggle).to_have_attribute("aria-expanded", "true")  # the redraw kept it open
    await assert_accessible(page, "a start's stage list open")
    await shot(page, "05-start-timeline.png")
    await page.keyboard.press("Space")  # a real button: Space works as Enter does
    await expect(stage_list).to_be_hidden()
    await expect(toggle).to_have_attribute("aria-expanded", "false")

    # The client filter applies to starts as to rooms and agents.
    await tab_to(page, id="filter-client", back=True, limit=80)
    await page.keyboard.type(OTHER_CLIENT_ID)
    await expect(row).to_be_hidden()


@pytest.mark.docker
@pytest.mark.livekit
async def test_filters_focus_across_redraws_and_distinct_close_buttons(
    fleet_orchestrator: tuple[OrchestratorServer, str], page: Page
) -> None:
    srv, admin = fleet_orchestrator
    room_a, room_b = f"fleet-a-{secrets.token_hex(3)}", f"fleet-b-{secrets.token_hex(3)}"
    async with httpx.AsyncClient(base_url=srv.base_url, headers={"Authorization": f"Bearer {admin}"}, timeout=60) as api:
        for agent, room in (("farah", room_a), ("clarence-coherence", room_b)):
            resp = await api.post("/api/v1/trigger-agent", json={
                "agent_slug": agent, "client_id": CLIENT_ID, "room_name": room, "user_id": "u-" + secrets.token_hex(3), "mode": "voice"})
            assert resp.status_code in (200, 201), resp.text
        # The page shows what the admin API knows: wait for the API to list both rooms first, so a slow room
        # registration (seen once: a room missing for over 15 s after its 201) fails here, named as the API's.
        deadline = time.monotonic() + 60
        while {r["room"] for r in (await api.get("/api/v1/admin/rooms")).json()["rooms"]} != {room_a, room_b}:
            assert time.monotonic() < deadline, f"/admin/rooms never listed both {room_a} and {room_b}"
            await asyncio.sleep(0.2)
    await page.goto(f"{srv.base_url}/dashboard")
    await use_key_by_keyboard(page, admin)
    rows = page.locator("#rooms tbody tr")
    await expect(rows).to_have_count(2, timeout=15_000)
    await expect(page.locator("#agents tbody tr")).to_have_count(2)
    # Distinct accessible names: one "Close room …" per room, found by role and name.
    for room in (room_a, room_b):
        await expect(page.get_by_role("button", name=f"Close room {room}", exact=True)).to_have_count(1)

    # Filter by client from the keyboard: another client's id hides both rooms and agents, a prefix of ours shows them.
    await tab_to(page, id="filter-client")
    await page.keyboard.type(OTHER_CLIENT_ID)
    await expect(page.locator("#rooms tbody tr:visible")).to_have_count(0)
    await expect(page.locator("#agents tbody tr:visible")).to_have_count(0)
    await expect(page.locator("#filter-summary")).to_have_text("Showing 0 of 2 agents and 0 of 2 rooms.")
    await expect(page.locator("#announcer")).to_contain_text("Showing 0 of 2 agents and 0 of 2 rooms.", timeout=5_000)
    await page.keyboard.press("Control+A")
    await page.keyboard.type(CLIENT_ID[:8])
    await expect(page.locator("#agents tbody tr:visible")).to_have_count(2)
    # Node: one Docker engine has none, so any node filter matches nothing.
    await tab_to(page, id="filter-node", limit=1)
    await page.keyboard.type("node-1")
    await expect(page.locator("#agents tbody tr:visible")).to_have_count(0)
    await assert_accessible(page, "filters hiding every row")
    # Clear filters (Enter on the reset button), then a state from the select, chosen with arrow keys.
    await tab_to(page, name="Clear filters")
    await page.keyboard.press("Enter")
    await expect(page.locator("#agents tbody tr:visible")).to_have_count(2)
    await expect(page.locator("#filter-summary")).to_have_text("2 agents, 2 rooms.")
    await tab_to(page, id="filter-state", back=True, limit=3)
    await page.keyboard.type("exited")
    assert await page.locator("#filter-state").input_value() == "exited"
    await expect(page.locator("#agents tbody tr:visible")).to_have_count(0)
    for _ in range(3):  # exited → restarting → created → running (type-ahead would join "exited" and "running")
        await page.keyboard.press("ArrowUp")
    assert await page.locator("#filter-state").input_value() == "running"
    await expect(page.locator("#agents tbody tr:visible")).to_have_count(2)
    await expect(page.locator("#rooms tbody tr:visible")).to_have_count(2)  # a room matches by its agents' states too

    # Focus on room A's Close survives redraws, and the row is the same DOM node (patched, not rebuilt).
    await tab_to(page, name=f"Close room {room_a}")
    await page.evaluate("(r) => { document.querySelector(`#rooms tr[data-room='${r}']`).__probe = 1; }", room_a)
    await wait_redraws(page, 3)
    assert (await focused(page))["name"] == f"Close room {room_a}", "a redraw dropped keyboard focus"
    assert await page.evaluate("(r) => document.querySelector(`#rooms tr[data-room='${r}']`).__probe === 1", room_a)
    await assert_accessible(page, "two rooms, focus on a Close button")
    await shot(page, "05-fleet-filtered-focus.png")

    # Close A with Enter: focus moves to the surviving room's Close, not to <body>.
    page.once("dialog", lambda d: asyncio.ensure_future(d.accept()))
    await page.keyboard.press("Enter")
    await expect(page.locator(f'#rooms tr[data-room="{room_a}"]')).to_have_count(0, timeout=15_000)
    assert (await focused(page))["name"] == f"Close room {room_b}"
    await expect(page.locator("#announcer")).to_contain_text(f"Closed room {room_a}", timeout=5_000)


# ---- 500 agents: the real page against a stub admin API at its HTTP boundary -------------------

ROOM_STATES = ["starting", "active", "active", "active", "grace_period", "closing", "empty"]
STATUSES = ["running"] * 8 + ["restarting", "exited", "created", "dead"]
HEALTHS = ["healthy", "healthy", "starting", "unhealthy", "none"]


def fleet_app(n: int) -> tuple[FastAPI, dict[str, int]]:
    """The dashboard's own router and static files, with admin answers for n agents on five nodes of a swarm.

    Each /containers answer changes every CPU figure, so each redraw patches n cells; /pool answers 404 until
    `pool` is set (the pool API is to come), then a list."""
    app = FastAPI()
    app.include_router(dashboard_router)
    mount_static(app)
    calls = {"containers": 0, "pool": 0}
    clients = [f"client-{i:02d}" for i in range(20)]
    rooms = [{"client_id": clients[i % 20], "room": f"room-{i:04d}", "state": ROOM_STATES[i % len(ROOM_STATES)],
              "humans": [f"user-{i}"] if ROOM_STATES[i % len(ROOM_STATES)] == "active" else [], "agents": [f"agent-farah-{i}"],
              "since": None, "grace_remaining_s": 30.0 if ROOM_STATES[i % len(ROOM_STATES)] == "grace_period" else None}
             for i in range(n)]

    @app.get("/api/v1/admin/rooms")
    async def _rooms() -> dict[str, Any]:
        return {"rooms": rooms}

    @app.get("/api/v1/admin/containers")
    async def _containers() -> dict[str, Any]:
        calls["containers"] += 1
        k = calls["containers"]
        return {"containers": [
            {"name": f"agent_{r['client_id']}_farah_{r['room']}", "id": f"{i:012x}", "status": STATUSES[i % len(STATUSES)],
             "health": HEALTHS[i % len(HEALTHS)], "exit_code": None, "client_id": r["client_id"], "agent": "farah",
             "room": r["room"], "created_at": None, "age_s": 60 + i, "cpu_ratio": ((i * 7 + k) % 100) / 1000,
             "memory_bytes": 50_000_000 + i * 1000, "job": None, "node": f"node-{i % 5 + 1}", "reason": None}
            for i, r in enumerate(rooms)]}

    @app.get("/api/v1/admin/stats")
    async def _stats() -> dict[str, Any]:
        return {"scope": "stub-fleet", "engine": "swarm", "rooms": {"total": n}, "containers": {"total": n, "running": n},
                "limits": {"max_agents_per_room": 1, "max_agents_per_client": 100, "max_agents_total": 1000},
                "reconciler": {"passes": 1, "heartbeat": None, "restarts_pending": 0, "last_pass": None}}

    @app.get("/api/v1/admin/pool")
    async def _pool(response: Response) -> dict[str, Any]:
        calls["pool"] += 1
        if not calls.get("pool_on"):
            response.status_code = 404
            return {"detail": "Not Found"}
        return {"members": [{"name": f"pool-{i}", "domain": "default", "node": f"node-{i % 5 + 1}",
                             "state": ["idle", "warming", "claimed"][i % 3], "age_s": 5 * i,
                             **({"client_id": "client-07", "room": f"room-07{i:02d}"} if i % 3 == 2 else {})} for i in range(12)]}

    @app.get("/api/v1/admin/dispatch")
    async def _dispatch() -> dict[str, Any]:
        return {"enabled": True, "jobs": [{"job_id": f"AJ_{i}", "client_id": clients[i], "agent": "farah", "room": f"room-{i:04d}",
                                           "status": ["joined", "launching", "failed"][i % 3], "container": None,
                                           "joined_after_s": 0.8 if i % 3 == 0 else None} for i in range(6)]}

    return app, calls


@pytest.fixture
async def fleet_server() -> AsyncIterator[tuple[str, dict[str, int]]]:
    app, calls = fleet_app(FLEET)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as client:
        deadline = time.monotonic() + 10
        while True:
            if task.done():
                task.result()
            try:
                if (await client.get(f"{url}/dashboard")).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the stub fleet server did not come up"
                await asyncio.sleep(0.05)
    yield url, calls
    server.should_exit = True
    await asyncio.wait_for(task, timeout=10)


async def test_500_agents_render_fast_keep_focus_and_pass_axe(fleet_server: tuple[str, dict[str, int]], bare_page: Page) -> None:
    url, calls = fleet_server
    page = bare_page
    # Main-thread CPU time (threadTicks), besides wall-clock: on a shared 2-core machine (load averages of 20-200
    # seen while this was written) wall-clock figures stretch many times over; CPU time is the page's own cost.
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("Performance.enable", {"timeDomain": "threadTicks"})

    async def cpu() -> dict[str, float]:
        return {m["name"]: m["value"] for m in (await cdp.send("Performance.getMetrics"))["metrics"]}

    await page.goto(f"{url}/dashboard")
    await page.evaluate("sessionStorage.setItem('orch_api_key', 'stub')")
    await page.reload()
    await expect(page.locator("#agents tbody tr")).to_have_count(FLEET, timeout=30_000)
    await expect(page.locator("#rooms tbody tr")).to_have_count(FLEET)
    await wait_redraws(page, 1)
    await expect(page.locator("#pool-note")).to_contain_text("No pool on this orchestrator")
    await expect(page.locator("#dispatch-jobs tbody tr")).to_have_count(6)
    start_n = await redraws(page)
    before = await cpu()
    await wait_redraws(page, 4, timeout_ms=30_000)
    after = await cpu()
    n = await redraws(page) - start_n
    per = {k: (after[k] - before[k]) * 1000 / n for k in ("TaskDuration", "ScriptDuration", "RecalcStyleDuration", "LayoutDuration")}
    m = await page.evaluate("window.dashboardMetrics")
    first_patch, first_frame = m["patchMs"][0], m["frameMs"][0]
    steady_patch, steady_frame = statistics.median(m["patchMs"][1:]), statistics.median(m["frameMs"][1:])
    print(f"\n{FLEET} agents + {FLEET} rooms, main-thread CPU per 2 s poll period "
          f"(redraw with every CPU cell changed, grace ticks) {per['TaskDuration']:.0f} ms (script {per['ScriptDuration']:.0f}, style "
          f"{per['RecalcStyleDuration']:.0f}, layout {per['LayoutDuration']:.0f}; n={n}).\nWall clock: first render "
          f"{first_patch:.0f} ms DOM patch / {first_frame:.0f} ms to next frame; redraw median {steady_patch:.0f} ms patch / "
          f"{steady_frame:.0f} ms to next frame (n={len(m['patchMs']) - 1})")
    # Usable: a poll period costs the main thread under 500 ms of CPU (a quarter of the 2 s), so the page keeps
    # answering input between polls; a rebuild of the tables or layout thrash at 500 rows costs seconds. (Measured
    # 190-250 ms on a shared, overloaded 2-core machine; wall clock is printed, not asserted: load stretches it.)
    assert per["TaskDuration"] < 500, f"a poll period at {FLEET} rows costs {per['TaskDuration']:.0f} ms of main-thread CPU"
    await expect(page.locator("#agents tbody tr").first.locator(".engine")).to_have_text("swarm")
    await expect(page.locator("#agents tbody tr").first.locator(".node")).to_have_text(re.compile(r"node-\d"))

    # Every state badge: text plus icon, and its colour at least 4.5:1 against its own background.
    tones = await page.evaluate("""() => { const seen = {};
        for (const b of document.querySelectorAll(".badge")) { const s = getComputedStyle(b);
          seen[b.className + " " + b.dataset.value] = [s.color, s.backgroundColor, b.textContent]; }
        return seen; }""")
    ratios = {k: contrast(fg, bg) for k, (fg, bg, _) in tones.items()}
    print("badge contrast ratios: " + ", ".join(f"{k.split()[1]}/{k.split()[2]} {r:.2f}" for k, r in sorted(ratios.items())))
    assert len({k.split()[1] for k in tones}) == 5, tones  # ok, warn, grace, bad, neutral all on the page
    assert min(ratios.values()) >= 4.5, ratios
    assert all(re.match(r"^\W\w", text) for _, _, text in tones.values()), tones  # icon then word

    # A filter on 500 rows answers within a frame budget, from the keyboard.
    await tab_to(page, id="filter-node", limit=40)
    t0 = await page.evaluate("performance.now()")
    await page.keyboard.type("node-3")
    await expect(page.locator("#agents tbody tr:visible")).to_have_count(FLEET // 5)
    filtered_ms = await page.evaluate("performance.now()") - t0
    await tab_to(page, name="Clear filters", limit=3)
    await page.keyboard.press("Enter")
    await expect(page.locator("#agents tbody tr:visible")).to_have_count(FLEET)

    # Focus deep in the table survives redraws that patch every row.
    target = "Close room room-0250"
    await page.get_by_role("button", name=target, exact=True).focus()
    await wait_redraws(page, 2)
    assert (await focused(page))["name"] == target

    # The pool API arrives: the same page shows its members without a reload (asked again within 15 polls).
    calls["pool_on"] = 1
    await expect(page.locator("#pool tbody tr")).to_have_count(12, timeout=40_000)
    await expect(page.locator("#pool tbody tr").first.locator(".state")).to_have_text("○idle")

    # axe on the 500-row page narrowed by a client filter: hidden rows are out of the accessibility tree, and the
    # 25 shown are like the rest (same cells, badges, buttons); all 1000 cost minutes of axe on a loaded CI machine.
    await page.locator("#filter-client").focus()
    await page.keyboard.type("client-07")
    await expect(page.locator("#agents tbody tr:visible")).to_have_count(FLEET // 20)
    await expect(page.locator("#pool tbody tr:visible")).to_have_count(4)  # the members claimed for that client
    started = time.monotonic()
    await assert_accessible(page, f"{FLEET} agents filtered to one client, pool and dispatch tables")
    print(f"keyboard filter on {FLEET} rows: {filtered_ms:.0f} ms to the filtered table (incl. typing 6 keys); "
          f"axe-core: {time.monotonic() - started:.1f} s")
    SHOTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(SHOTS / "06-fleet-500.png"))  # the viewport: a full-page shot of 1000 rows is slow
