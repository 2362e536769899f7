"""The agent image end to end: trigger → container → agent in the room (real Docker, real livekit-server)."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import docker
import pytest
from livekit import api

from orchestrator.livekit.client import LiveKitGateway, agent_token
from orchestrator.core.models import LiveKitCredentials, Mode
from orchestrator.rules.naming import Label
from orchestrator.runtime.docker.runtime import DockerRuntime
from orchestrator.settings import Settings
from orchestrator.tenants.file_store import FileTenantStore
from orchestrator.services.trigger import TriggerResult, TriggerService
from tests.conftest import CLIENT_ID
from devtools.agent_room import CHAT_TOPIC, Participant, eventually, loudest_sample
from devtools.livekit_server import LiveKitServer, free_port

pytestmark = [pytest.mark.docker, pytest.mark.livekit]

AGENT_IMAGE = "agent-orchestrator/agent:latest"
AGENT_KIND = api.ParticipantInfo.Kind.AGENT


@pytest.fixture(scope="session")
def agent_image(docker_client: docker.DockerClient) -> str:
    docker_client.images.get(AGENT_IMAGE)  # built by scripts/build-images; missing is a failure, not a skip
    return AGENT_IMAGE


@pytest.fixture
def settings(make_settings: Callable[..., Settings], agent_image: str) -> Settings:
    # Stop timeout well above the 5 s the agent is given to leave: SIGKILL must not be what ends it.
    return make_settings(agent_image=agent_image, agent_memory="256m", agent_cpus=0.5, agent_stop_timeout_s=10)


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[TriggerService]:
    runtime = DockerRuntime()
    livekit = LiveKitGateway()
    yield TriggerService(settings=settings, tenants=FileTenantStore(settings.tenants_file), livekit=livekit, runtime=runtime)
    await livekit.aclose()
    runtime.close()


@pytest.fixture
def creds(livekit_server: LiveKitServer) -> LiveKitCredentials:
    return LiveKitCredentials(url=livekit_server.url, api_key=livekit_server.api_key, api_secret=livekit_server.api_secret)


def fresh_room(scope: str, name: str) -> str:
    return f"{scope}-{name}"


async def participants(creds: LiveKitCredentials, room: str) -> list[api.ParticipantInfo]:
    gateway = LiveKitGateway()
    try:
        return await gateway.list_participants(creds, room=room)
    finally:
        await gateway.aclose()


async def agent_listed(creds: LiveKitCredentials, room: str, identity: str) -> api.ParticipantInfo:
    async def probe() -> api.ParticipantInfo | None:
        return next((p for p in await participants(creds, room) if p.identity == identity), None)

    return await eventually(probe, timeout=30, what=f"{identity} in ListParticipants of {room}")


def container(docker_client: docker.DockerClient, result: TriggerResult) -> docker.models.containers.Container:
    return docker_client.containers.get(result.container.name)


async def logs(c: docker.models.containers.Container) -> str:
    return (await asyncio.to_thread(c.logs)).decode(errors="replace")


async def wait_exit(c: docker.models.containers.Container, *, timeout: float) -> int:
    async def probe() -> int | None:
        await asyncio.to_thread(c.reload)
        return c.attrs["State"]["ExitCode"] + 1000 if c.status == "exited" else None  # +1000: 0 is falsy

    return await eventually(probe, timeout=timeout, what=f"{c.name} to exit", interval=0.2) - 1000


async def test_voice_agent_joins_speaks_answers_and_leaves_on_docker_stop(
    service: TriggerService, creds: LiveKitCredentials, docker_client: docker.DockerClient, scope: str
) -> None:
    room = fresh_room(scope, "voice")
    result = await service.trigger(client_id=CLIENT_ID, agent_slug="clarence-coherence", mode=Mode.voice, user_id="u1", room_name=room)

    me = await agent_listed(creds, room, "agent-clarence-coherence")
    assert me.kind == AGENT_KIND
    assert me.name == "Clarence Coherence"

    async with Participant(creds.url, result.user_token) as user:
        track = await user.track_from("agent-clarence-coherence")
        # The agent chimes when a human joins: real audio arrives, not just a muted track.
        assert await loudest_sample(track, timeout=10, enough=5000) >= 5000

        await user.room.local_participant.send_text("is anybody there?", topic=CHAT_TOPIC)
        reply = await user.next_text(sender="agent-clarence-coherence")
        assert "Clarence Coherence" in reply.text and "is anybody there?" in reply.text

        c = container(docker_client, result)

        async def healthy() -> bool:
            await asyncio.to_thread(c.reload)
            return c.attrs["State"].get("Health", {}).get("Status") == "healthy"

        await eventually(healthy, timeout=20, what="the HEALTHCHECK to report healthy", interval=0.5)

        started = time.monotonic()
        stop = asyncio.ensure_future(asyncio.to_thread(c.stop, timeout=10))

        async def gone() -> bool:
            return all(p.identity != "agent-clarence-coherence" for p in await participants(creds, room))

        await eventually(gone, timeout=5, what="the agent to leave the room after docker stop")
        left_after = time.monotonic() - started
        await stop
    assert left_after < 5
    assert await wait_exit(c, timeout=10) == 0  # a normal end, not a kill (137) or a crash
    text = await logs(c)
    assert "mode=voice behaviour=offline" in text
    assert "received SIGTERM" in text and "left the room; exit 0" in text
    assert result.user_token not in text and "api_secret" not in text


async def test_text_agent_greets_and_answers_text_streams_and_data(
    service: TriggerService, creds: LiveKitCredentials, docker_client: docker.DockerClient, scope: str
) -> None:
    room = fresh_room(scope, "text")
    result = await service.trigger(client_id=CLIENT_ID, agent_slug="farah", mode=Mode.text, user_id="u1", room_name=room)
    await agent_listed(creds, room, "agent-farah")

    async with Participant(creds.url, result.user_token) as user:
        greeting = await user.next_text(sender="agent-farah")
        assert greeting.text == "Hi, Farah here."

        await user.room.local_participant.send_text("hello farah", topic=CHAT_TOPIC)
        assert "hello farah" in (await user.next_text(sender="agent-farah")).text

        await user.room.local_participant.publish_data(b"over data", topic=CHAT_TOPIC)
        reply = await user.next_data(sender="agent-farah")
        assert reply.topic == CHAT_TOPIC and "over data" in reply.text

        agent = user.room.remote_participants["agent-farah"]
        assert not agent.track_publications  # text mode: no audio
    assert "mode=text behaviour=offline" in await logs(container(docker_client, result))


async def test_two_slugs_in_one_room_are_two_agents_under_their_own_identities(
    service: TriggerService, creds: LiveKitCredentials, docker_client: docker.DockerClient, scope: str
) -> None:
    room = fresh_room(scope, "duo")
    first = await service.trigger(client_id=CLIENT_ID, agent_slug="clarence-coherence", mode=Mode.text, user_id="u1", room_name=room)
    second = await service.trigger(client_id=CLIENT_ID, agent_slug="farah", mode=Mode.text, user_id="u1", room_name=room)
    assert first.container.name != second.container.name

    clarence = await agent_listed(creds, room, "agent-clarence-coherence")
    farah = await agent_listed(creds, room, "agent-farah")
    assert (clarence.kind, farah.kind) == (AGENT_KIND, AGENT_KIND)
    assert (clarence.name, farah.name) == ("Clarence Coherence", "Farah")

    async with Participant(creds.url, first.user_token) as user:
        await user.room.local_participant.send_text("roll call", topic=CHAT_TOPIC)
        answers: dict[str, str] = {}
        while len(answers) < 2 or any("roll call" not in t for t in answers.values()):
            msg = await user.next_text()
            if "roll call" in msg.text:
                answers[msg.sender] = msg.text
        assert set(answers) == {"agent-clarence-coherence", "agent-farah"}
        assert "Clarence Coherence" in answers["agent-clarence-coherence"] and "Farah" in answers["agent-farah"]

    # Agents never answer each other (that would never stop): neither log shows a chat from an agent.
    for result in (first, second):
        assert "chat from agent-" not in await logs(container(docker_client, result))


def run_agent(
    docker_client: docker.DockerClient, scope: str, *, env: dict[str, str], name: str
) -> docker.models.containers.Container:
    """Run the agent image directly (no orchestrator), labelled with the test's scope so it is removed."""
    return docker_client.containers.run(
        AGENT_IMAGE, detach=True, name=f"{scope}-{name}", environment=env, network_mode="host", init=True,
        labels={Label.MANAGED: "true", Label.SCOPE: scope}, mem_limit="256m",
    )


def agent_env(creds: LiveKitCredentials, *, room: str, slug: str = "farah", **extra: str) -> dict[str, str]:
    return {
        "LIVEKIT_URL": creds.url,
        "LIVEKIT_ROOM": room,
        "LIVEKIT_TOKEN": agent_token(creds, slug=slug, name=slug.title(), room=room, ttl_s=600),
        "AGENT_MODE": "voice",
        "AGENT_CONFIG": json.dumps({"id": slug, "slug": slug, "name": slug.title()}),
        **extra,
    }


async def test_failsafe_leaves_a_room_no_human_joined(
    creds: LiveKitCredentials, docker_client: docker.DockerClient, scope: str, agent_image: str
) -> None:
    room = fresh_room(scope, "alone")
    c = run_agent(docker_client, scope, name="alone",
                  env=agent_env(creds, room=room, AGENT_GRACE_SECONDS="2", AGENT_FAILSAFE_MARGIN_SECONDS="1"))
    await agent_listed(creds, room, "agent-farah")
    joined = time.monotonic()
    assert await wait_exit(c, timeout=20) == 0
    assert time.monotonic() - joined >= 2  # not before grace + margin (3 s, minus the listing delay)
    text = await logs(c)
    assert "no human in the room" in text and "failsafe" in text
    assert all(p.identity != "agent-farah" for p in await participants(creds, room))


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts TCP connections and never answers: a black-holed LiveKit."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


@pytest.mark.parametrize(
    ("case", "code", "line"),
    [
        ("no-token", 2, "bad configuration: LIVEKIT_TOKEN is missing or empty"),
        ("malformed-json", 2, "bad configuration: AGENT_CONFIG is not valid JSON"),
        ("token-for-another-agent", 2, "bad configuration: LIVEKIT_TOKEN is for identity 'agent-clarence'"),
        ("connection-refused", 3, "could not join room"),
        ("no-answer", 3, "no answer within 3s"),
    ],
)
async def test_bad_configuration_exits_non_zero_with_a_clear_line(
    case: str, code: int, line: str, creds: LiveKitCredentials, docker_client: docker.DockerClient,
    scope: str, agent_image: str, silent_port: int,
) -> None:
    room = fresh_room(scope, "bad")
    env = agent_env(creds, room=room, AGENT_CONNECT_TIMEOUT_SECONDS="3")
    if case == "no-token":
        del env["LIVEKIT_TOKEN"]
    elif case == "malformed-json":
        env["AGENT_CONFIG"] = '{"slug": "farah", "name": '
    elif case == "token-for-another-agent":
        env["LIVEKIT_TOKEN"] = agent_token(creds, slug="clarence", name="C", room=room, ttl_s=600)
    elif case == "connection-refused":
        with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
            s.bind(("127.0.0.1", 0))
            env["LIVEKIT_URL"] = f"ws://127.0.0.1:{s.getsockname()[1]}"
    else:
        env["LIVEKIT_URL"] = f"ws://127.0.0.1:{silent_port}"
    started = time.monotonic()
    c = run_agent(docker_client, scope, name=case, env=env)
    assert await wait_exit(c, timeout=20) == code
    assert time.monotonic() - started < 15  # bounded: no hang
    text = await logs(c)
    assert line in text
    if "LIVEKIT_TOKEN" in env:
        assert env["LIVEKIT_TOKEN"] not in text


async def test_agent_kicked_by_duplicate_identity_exits_cleanly(
    creds: LiveKitCredentials, docker_client: docker.DockerClient, scope: str, agent_image: str
) -> None:
    """LiveKit kicks the older of two same-identity agents; it must end with 0 so Docker does not restart it."""
    room = fresh_room(scope, "dup")
    older = run_agent(docker_client, scope, name="older", env=agent_env(creds, room=room, AGENT_MODE="text"))
    await agent_listed(creds, room, "agent-farah")
    await eventually(lambda: _contains(older, "joined the room"), timeout=20, what="older joined")
    newer = run_agent(docker_client, scope, name="newer", env=agent_env(creds, room=room, AGENT_MODE="text"))
    assert await wait_exit(older, timeout=20) == 0
    assert "DUPLICATE_IDENTITY" in await logs(older)
    await eventually(lambda: _contains(newer, "joined the room"), timeout=20, what="newer joined")
    newer.reload()
    assert newer.status == "running"


async def _contains(c: docker.models.containers.Container, needle: str) -> bool:
    return needle in await logs(c)


async def test_with_an_llm_key_it_runs_a_livekit_agents_session_up_to_the_provider(
    creds: LiveKitCredentials, docker_client: docker.DockerClient, scope: str, agent_image: str
) -> None:
    """No cloud here: the provider URL is a closed loopback port, so the session fails at that boundary.

    What this shows: the key switches the behaviour to livekit-agents, the agent still joins under its
    identity, and a dead model ends the container non-zero (Docker's on-failure policy retries it).
    """
    room = fresh_room(scope, "llm")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    env = agent_env(creds, room=room, OPENAI_API_KEY="sk-test-not-a-real-key", OPENAI_BASE_URL=f"http://127.0.0.1:{closed}/v1")
    c = run_agent(docker_client, scope, name="llm", env=env)
    assert (await agent_listed(creds, room, "agent-farah")).kind == AGENT_KIND
    assert await wait_exit(c, timeout=60) == 1
    text = await logs(c)
    assert "mode=voice behaviour=llm (openai realtime, key from OPENAI_API_KEY)" in text
    assert "unrecoverable LLM error" in text
    assert "sk-test-not-a-real-key" not in text


async def test_health_follows_the_connection(
    docker_client: docker.DockerClient, scope: str, agent_image: str
) -> None:
    """Healthy once joined; when LiveKit dies without a goodbye, unhealthy after the threshold, then exit 4."""
    server = LiveKitServer(api_key="hkey", api_secret=secrets.token_hex(32), port=free_port()).start()
    try:
        own = LiveKitCredentials(url=server.url, api_key=server.api_key, api_secret=server.api_secret)
        room = fresh_room(scope, "health")
        c = run_agent(docker_client, scope, name="health", env=agent_env(own, room=room, AGENT_UNHEALTHY_AFTER_SECONDS="2"))

        async def health() -> str:
            await asyncio.to_thread(c.reload)
            return c.attrs["State"].get("Health", {}).get("Status", "")

        assert await health() in ("starting", "")  # not healthy before the first check after joining
        await eventually(lambda: _equals(health, "healthy"), timeout=20, what="healthy", interval=0.3)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGKILL)  # a crash: no leave message, the agent must notice by itself
        server.proc.wait(timeout=10)
        await eventually(lambda: _equals(health, "unhealthy"), timeout=30, what="unhealthy after losing LiveKit", interval=0.3)
        assert await wait_exit(c, timeout=120) == 4
        assert "connection to LiveKit lost; reconnecting" in await logs(c)
    finally:
        server.stop()


async def _equals(probe: Callable[[], Awaitable[str]], want: str) -> bool:
    return await probe() == want
