"""The agent image's warm mode: one assignment line on stdin, at most once, bounded (real pipes, no container)."""

from __future__ import annotations

import json
import os

import pytest

from agent_image import warm
from agent_image.config import ConfigError


def pipe_with(data: bytes, *, close: bool = True) -> int:
    r, w = os.pipe()
    os.write(w, data)
    if close:
        os.close(w)
    return r


def test_reads_exactly_one_line() -> None:
    fd = pipe_with(b'{"env": {"LIVEKIT_ROOM": "r1"}}\n{"env": {"LIVEKIT_ROOM": "r2"}}\n')
    line = warm.wait_for_line(fd=fd, max_age_s=5, beat=lambda: None)
    assert warm.parse_assignment(line) == {"LIVEKIT_ROOM": "r1"}  # the second assignment is never taken


@pytest.mark.parametrize(("data", "close", "expected"), [
    (b"", True, None),  # stdin closed: no assignment, exit 0
    (b"", False, None),  # nothing within the max age
    (b'{"env": {}}', True, b'{"env": {}}'),  # a writer that closed without a newline still counts once
])
def test_no_line(data: bytes, close: bool, expected: bytes | None) -> None:
    beats: list[int] = []
    assert warm.wait_for_line(fd=pipe_with(data, close=close), max_age_s=0.3, beat=lambda: beats.append(1)) == expected
    assert beats  # the heartbeat is kept while waiting


@pytest.mark.parametrize("line", [b"not json", b"[]", b'{"env": "x"}', b'{"env": {"A": 1}}', b"\xff\xfe"])
def test_bad_assignment_is_a_config_error(line: bytes) -> None:
    with pytest.raises(ConfigError):
        warm.parse_assignment(line)


def test_assignment_fills_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    r, w = os.pipe()
    os.write(w, json.dumps({"env": {"LIVEKIT_ROOM": "r1"}}).encode() + b"\n")
    monkeypatch.setattr("sys.stdin", os.fdopen(r))
    env = warm.await_assignment({"AGENT_WARM": "1", "AGENT_HEALTH_FILE": str(tmp_path / "h.json")})
    assert env == {"AGENT_WARM": "1", "AGENT_HEALTH_FILE": str(tmp_path / "h.json"), "LIVEKIT_ROOM": "r1"}
    assert json.loads((tmp_path / "h.json").read_text())["state"] == "waiting"


@pytest.mark.parametrize(("topic", "from_server", "taken"), [
    ("orchestrator.assignment", True, True),
    ("orchestrator.assignment", False, False),  # a participant cannot hand out work (and members may not publish data)
    ("chat", True, False),
    (None, True, False),
])
def test_only_a_server_packet_on_the_topic_is_an_assignment(topic: str | None, from_server: bool, taken: bool) -> None:
    assert warm.is_assignment(topic=topic, from_server=from_server) is taken


def test_a_lobby_without_its_livekit_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="LIVEKIT_URL or AGENT_LOBBY_TOKEN"):
        warm.await_assignment({"AGENT_LOBBY_ROOM": "orch-lobby-x", "AGENT_LOBBY_TOKEN": "t", "AGENT_HEALTH_FILE": "/nonexistent/h"})


def test_a_docker_lobby_member_whose_stdin_closes_before_its_token_ends_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    r, w = os.pipe()
    os.close(w)
    monkeypatch.setattr("sys.stdin", os.fdopen(r))
    assert warm.await_assignment({"AGENT_LOBBY_ROOM": "orch-lobby-x", "LIVEKIT_URL": "ws://lk:7880", "AGENT_HEALTH_FILE": "/nonexistent/h"}) is None


def test_a_docker_lobby_member_reads_its_token_from_stdin_first(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    r, w = os.pipe()
    os.write(w, b'{"lobby_token":"eyJ.tok.en"}\n')
    monkeypatch.setattr("sys.stdin", os.fdopen(r))
    joined: list[tuple[str, str]] = []

    def lobby(*, url: str, token: str, max_age_s: float, beat) -> bytes:  # type: ignore[no-untyped-def]
        joined.append((url, token))
        return json.dumps({"env": {"LIVEKIT_ROOM": "r1"}}).encode()

    monkeypatch.setattr(warm, "lobby_in_background", lobby)
    env = warm.await_assignment({"AGENT_LOBBY_ROOM": "orch-lobby-x", "LIVEKIT_URL": "ws://lk:7880", "AGENT_HEALTH_FILE": str(tmp_path / "h")})
    assert joined == [("ws://lk:7880", "eyJ.tok.en")] and env is not None and env["LIVEKIT_ROOM"] == "r1"


@pytest.mark.parametrize("line", [b"nope", b'{"lobby_token": ""}', b'{"env": {}}', b"[1]"])
def test_a_bad_lobby_token_line_is_a_config_error(line: bytes) -> None:
    with pytest.raises(ConfigError, match="lobby token"):
        warm.parse_lobby_token(line)
