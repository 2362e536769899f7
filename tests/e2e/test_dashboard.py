"""The dashboard in a real headless Chromium (Debian's), against a real orchestrator, Docker and livekit-server.

The page asks for the admin key, Test Agent triggers an agent and joins its room from the browser with the
LiveKit JS client, the room shows ACTIVE, the grace countdown runs after the browser leaves, and Close
removes the room. Screenshots go to tests/screenshots/ (git-ignored).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import docker
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from orchestrator.core.apikeys import entry_yaml, generate
from orchestrator.settings import Settings
from tests.conftest import CLIENT_ID, write_tenants
from devtools.livekit_server import LiveKitServer
from devtools.orchestrator_server import OrchestratorServer, start_orchestrator

pytestmark = [pytest.mark.docker, pytest.mark.livekit]
SHOTS = Path(__file__).resolve().parents[1] / "screenshots"
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


@pytest.fixture
async def orchestrator(scope: str, tmp_path: Path, hooked_livekit: LiveKitServer, orch_port: int) -> AsyncIterator[tuple[OrchestratorServer, str]]:
    admin = generate()
    (tmp_path / "keys.yaml").write_text("keys:\n" + entry_yaml(name="dashboard-test", key=admin, client_id=None))
    settings = Settings(
        scope=scope, tenants_file=write_tenants(tmp_path / "tenants.yaml", hooked_livekit), agent_image=AGENT_IMAGE,
        agent_memory="256m", agent_cpus=0.5, agent_stop_timeout_s=2, port=orch_port, grace_period_s=GRACE_S,
        agent_startup_timeout_s=0, api_keys_file=tmp_path / "keys.yaml", usage_sample_interval_s=1,
    )
    srv = await start_orchestrator(settings)
    yield srv, admin
    await srv.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield b
        await b.close()


@pytest.fixture
async def page(browser: Browser, request: pytest.FixtureRequest, hooked_livekit: LiveKitServer) -> AsyncIterator[Page]:
    ctx = await browser.new_context(viewport={"width": 1400, "height": 1000})
    p = await ctx.new_page()
    console: list[str] = []
    p.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    p.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    yield p
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        SHOTS.mkdir(exist_ok=True)
        await p.screenshot(path=str(SHOTS / "failure.png"), full_page=True)
        print("\n==== browser console ====\n" + "\n".join(console[-60:]))
        print(f"\n==== livekit-server log ====\n{hooked_livekit.log_tail()}")
    await ctx.close()


async def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(SHOTS / name), full_page=True)


def grace_seconds(text: str) -> int:
    m = re.fullmatch(r"(\d+)s", text.strip())
    assert m, f"grace cell shows {text!r}"
    return int(m.group(1))


async def test_dashboard_test_agent_grace_countdown_and_close(
    orchestrator: tuple[OrchestratorServer, str], page: Page, hooked_livekit: LiveKitServer, docker_client: docker.DockerClient
) -> None:
    srv, admin = orchestrator
    room = f"dash-{secrets.token_hex(3)}"
    await page.goto(f"{srv.base_url}/dashboard")
    # Without a key the admin API answers 401 and the page says what it needs.
    await expect(page.locator("#banner")).to_contain_text("API key", timeout=10_000)
    await page.fill("#api-key", admin)
    await page.click("#key-form button[type=submit]")
    await expect(page.locator("#banner")).to_be_hidden(timeout=10_000)
    await expect(page.locator("#live")).to_have_text("events: live", timeout=10_000)
    assert await page.evaluate("sessionStorage.getItem('orch_api_key')") == admin
    await shot(page, "01-dashboard-empty.png")

    # Test Agent: trigger through the API, then join the room from the browser (LiveKit JS client).
    await page.fill("#test-client", CLIENT_ID)
    await page.fill("#test-agent", "farah")
    await page.fill("#test-room", room)
    started = time.monotonic()
    await page.click("#test-agent-btn")
    await expect(page.locator("body")).to_have_attribute("data-call", room, timeout=30_000)
    joined_s = time.monotonic() - started
    row = page.locator(f'#rooms tr[data-room="{room}"][data-client="{CLIENT_ID}"]')
    await expect(row).to_be_visible(timeout=10_000)
    # The real agent image joins as agent-farah; the browser sees it in its call.
    await expect(row).to_have_attribute("data-state", "active", timeout=15_000)
    await expect(row.locator(".humans")).to_contain_text("dashboard-")
    await expect(row.locator(".agents")).to_contain_text("agent-farah")
    await expect(page.locator("#call-participants")).to_contain_text("agent-farah")
    container = page.locator("#containers tr[data-container]", has_text=room)
    await expect(container).to_have_count(1)
    await expect(container.locator(".mem")).to_contain_text("MiB", timeout=10_000)  # from the background sampler
    await expect(page.locator("#events li[data-kind=trigger]")).to_contain_text(room)
    await expect(page.locator("#events li[data-kind=room]").first).to_be_visible()
    await shot(page, "02-room-active-in-call.png")

    # The browser (the only human) leaves: grace period, and the countdown runs down on the page.
    await page.click("#leave-btn")
    await expect(row).to_have_attribute("data-state", "grace_period", timeout=15_000)
    first = grace_seconds(await row.locator(".grace").inner_text())
    assert 0 < first <= GRACE_S
    deadline = time.monotonic() + 5
    while grace_seconds(await row.locator(".grace").inner_text()) >= first:
        assert time.monotonic() < deadline, "the grace countdown did not move"
        await asyncio.sleep(0.2)
    await shot(page, "03-room-grace-countdown.png")

    # Force-close from the page (confirm dialog accepted): the row goes, and so does the container.
    page.once("dialog", lambda d: asyncio.ensure_future(d.accept()))
    await row.locator("button.close").click()
    await expect(row).to_have_count(0, timeout=15_000)
    names = [c.name for c in docker_client.containers.list(all=True, filters={"label": f"agent-orchestrator.room={room}"})]
    assert names == []
    await expect(page.locator("#events li[data-kind=reconcile]", has_text="closed by an operator").first).to_be_visible()
    await shot(page, "04-room-closed.png")
    print(f"\nTest Agent click → in call from the browser: {joined_s:.2f}s")
