"""Pure lifecycle rules of the agent container: humans vs agents, the failsafe, exit codes, health."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from agent_image import tone
from agent_image.config import AgentConfig
from agent_image.health import Beat, verdict
from agent_image.lifecycle import Exit, Failsafe, Headcount, Kind, exit_for_disconnect, headcount, is_human
from agent_image.replies import greeting, offline_reply


@pytest.mark.parametrize(
    ("name", "kind", "human"),
    [
        ("PARTICIPANT_KIND_STANDARD", Kind.standard, True),
        ("PARTICIPANT_KIND_SIP", Kind.sip, True),
        ("PARTICIPANT_KIND_AGENT", Kind.agent, False),
        ("PARTICIPANT_KIND_EGRESS", Kind.egress, False),
        ("PARTICIPANT_KIND_INGRESS", Kind.ingress, False),
        ("PARTICIPANT_KIND_CONNECTOR", Kind.connector, False),
        ("PARTICIPANT_KIND_SOMETHING_NEW", Kind.unknown, False),
    ],
)
def test_kinds(name: str, kind: Kind, human: bool) -> None:
    assert Kind.from_name(name) is kind
    assert is_human(kind) is human


@pytest.mark.parametrize(
    ("kinds", "humans", "agents"),
    [
        ([], 0, 0),
        ([Kind.agent, Kind.agent], 0, 2),
        ([Kind.standard, Kind.agent, Kind.egress, Kind.sip], 2, 1),
    ],
)
def test_headcount(kinds: list[Kind], humans: int, agents: int) -> None:
    assert headcount(kinds) == Headcount(humans=humans, agents=agents)


# (time, humans present) observations, then whether the failsafe has fired, with after_s = 10.
@pytest.mark.parametrize(
    ("observations", "now", "expired"),
    [
        ([], 9.9, False),  # nobody ever came: counted from joining
        ([], 10.0, True),
        ([(1, 1)], 10.5, False),  # a human came
        ([(1, 1), (5, 0)], 14.9, False),  # left at 5: alone for 9.9
        ([(1, 1), (5, 0)], 15.0, True),
        ([(1, 1), (5, 0), (8, 0)], 15.0, True),  # still alone: the clock does not restart
        ([(1, 1), (5, 0), (12, 2)], 30.0, False),  # came back and stays
        ([(1, 1), (5, 0), (12, 2), (13, 0)], 22.9, False),  # left again at 13
        ([(1, 1), (5, 0), (12, 2), (13, 0)], 23.0, True),
    ],
)
def test_failsafe(observations: list[tuple[float, int]], now: float, expired: bool) -> None:
    fs = Failsafe(after_s=10, now=0.0)
    for t, humans in observations:
        fs.observe(now=t, humans=humans)
    if observations and observations[-1][1] > 0:
        fs.observe(now=now, humans=observations[-1][1])
    assert fs.expired(now) is expired


def test_failsafe_zero_grace_fires_at_once() -> None:
    assert Failsafe(after_s=0, now=5.0).expired(5.0)


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        ("CLIENT_INITIATED", Exit.OK),
        ("DUPLICATE_IDENTITY", Exit.OK),  # restarting would kick the newer agent, forever
        ("ROOM_DELETED", Exit.OK),
        ("PARTICIPANT_REMOVED", Exit.OK),
        ("ROOM_CLOSED", Exit.OK),
        ("SERVER_SHUTDOWN", Exit.CONNECTION_LOST),
        ("SIGNAL_CLOSE", Exit.CONNECTION_LOST),
        ("UNKNOWN_REASON", Exit.CONNECTION_LOST),
        ("CONNECTION_TIMEOUT", Exit.CONNECTION_LOST),
    ],
)
def test_exit_for_disconnect(reason: str, code: Exit) -> None:
    assert exit_for_disconnect(reason) is code


@pytest.mark.parametrize(
    ("beat", "now", "healthy", "why"),
    [
        (None, 100.0, False, "not joined"),
        (Beat(state="connecting", at=100.0), 100.5, False, "connecting"),
        (Beat(state="joined", at=100.0), 101.0, True, "joined"),
        (Beat(state="joined", at=100.0), 111.0, False, "stuck"),  # heartbeat stale
        (Beat(state="reconnecting", at=100.0, disconnected_since=95.0, unhealthy_after_s=15), 101.0, True, "reconnecting"),
        (Beat(state="reconnecting", at=109.0, disconnected_since=95.0, unhealthy_after_s=15), 111.0, False, "disconnected for 16s"),
        (Beat(state="leaving", at=100.0), 100.0, False, "leaving"),
    ],
)
def test_health_verdict(beat: Beat | None, now: float, healthy: bool, why: str) -> None:
    ok, reason = verdict(beat, now=now)
    assert ok is healthy
    assert why in reason


def test_chime_is_audible_and_framed() -> None:
    frames = tone.frames(tone.chime())
    assert len(frames) == int(0.6 * tone.SAMPLE_RATE) // tone.SAMPLES_PER_FRAME
    assert all(len(f) == tone.SAMPLES_PER_FRAME * 2 for f in frames)
    assert tone.peak(frames[len(frames) // 2]) > 5000
    assert tone.peak(tone.silence()) == 0


def test_replies() -> None:
    farah = AgentConfig(id="a", slug="farah", name="Farah")
    assert greeting(farah) == "Hi, this is Farah."
    assert greeting(AgentConfig(id="a", slug="farah", name="Farah", greeting="Hello!")) == "Hello!"
    reply = offline_reply(farah, "  what   time\nis it " + "x" * 500)
    assert reply.startswith("Farah (offline mode, no LLM configured) heard: what time is it")
    assert len(reply) < 300


def test_heartbeat_file_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from agent_image.health import read, write

    path = str(tmp_path / "health.json")
    assert read(path) is None
    beat = Beat(state="reconnecting", at=10.0, disconnected_since=9.0, unhealthy_after_s=5)
    write(path, beat)
    assert read(path) == beat
    (tmp_path / "health.json").write_text("{half")
    assert read(path) is None  # a torn or foreign file is "no heartbeat", not a crash


@pytest.mark.parametrize(
    ("beats", "marked"),
    [
        ([Beat(state="waiting", at=time.time())], True),  # an idle pool member is healthy
        ([Beat(state="joined", at=time.time())], True),
        ([Beat(state="connecting", at=time.time())], False),
        ([Beat(state="joined", at=time.time()), Beat(state="leaving", at=time.time())], False),  # removed, not left to age
        ([Beat(state="reconnecting", at=time.time(), disconnected_since=time.time() - 20, unhealthy_after_s=15)], False),
    ],
)
def test_the_healthy_marker_follows_the_verdict(tmp_path, beats: list[Beat], marked: bool) -> None:  # type: ignore[no-untyped-def]
    from agent_image.health import marker, write

    path = str(tmp_path / "health.json")
    for beat in beats:
        write(path, beat)
    assert os.path.exists(marker(path)) is marked


def _image_healthcheck() -> list[str]:
    """The HEALTHCHECK command exactly as Dockerfile.agent gives it (the JSON after CMD, continuation lines joined)."""
    text = (Path(__file__).parents[2] / "Dockerfile.agent").read_text().replace("\\\n", " ")
    line = next(raw for raw in text.splitlines() if raw.startswith("HEALTHCHECK"))
    return json.loads(line.split(" CMD ", 1)[1])


@pytest.mark.parametrize(("age_s", "healthy"), [(0, True), (8, True), (12, False), (None, False)])
def test_the_image_healthcheck_ages_the_marker(tmp_path, age_s: float | None, healthy: bool) -> None:  # type: ignore[no-untyped-def]
    from agent_image.health import marker

    path = tmp_path / "agent-health.json"
    if age_s is not None:
        Path(marker(str(path))).touch()
        then = time.time() - age_s
        os.utime(marker(str(path)), (then, then))
    run = subprocess.run(_image_healthcheck(), env={"AGENT_HEALTH_FILE": str(path), "PATH": os.environ["PATH"]}, timeout=10)
    assert (run.returncode == 0) is healthy
