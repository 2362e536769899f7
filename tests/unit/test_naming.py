"""Table tests for the pure naming rules: slugs, container names, labels, spec hashes."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest

from orchestrator.core.errors import InvalidInput
from orchestrator.core.models import Agent, ContainerKey, Mode
from orchestrator.rules.naming import (
    NAME_MAX,
    Label,
    clean_slug,
    closest,
    container_labels,
    container_name,
    key_from_labels,
    normalise_slug,
    spec_hash,
    validate_room,
)

UUID = "df91fd06-816f-4273-a903-5a4861277040"
DOCKER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("clarence_coherence", "clarence-coherence"),
        ("clarence-coherence", "clarence-coherence"),
        ("  Clarence Coherence  ", "clarence-coherence"),
        ("CLARENCE__COHERENCE", "clarence-coherence"),
        ("clarence - _ coherence", "clarence-coherence"),
        ("-farah-", "farah"),
        ("a\tb\nc", "a-b-c"),
        ("litebridge", "litebridge"),
        ("agent-2", "agent-2"),
        ("x" * 63, "x" * 63),
    ],
)
def test_slug_normalises(raw: str, expected: str) -> None:
    assert clean_slug(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["", "   ", "___", "../x", "a/b", "café", "emoji-😀", "semi;colon", "dot.ted", "x" * 64, "x" * 10_000],
)
def test_slug_rejects_with_rule(raw: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        clean_slug(raw)
    assert exc.value.details["field"] == "agent_slug"
    assert "dashes" in exc.value.message and "63" in exc.value.message


def test_normalise_collapses_but_does_not_validate() -> None:
    assert normalise_slug("a__b--c") == "a-b-c"
    assert normalise_slug("../x") == "../x"  # left for validate_slug to refuse


def key(room: str, *, client: str = UUID, slug: str = "clarence-coherence") -> ContainerKey:
    return ContainerKey(client_id=client, agent_slug=slug, room=room)


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        (key("test-room-1", client="acme"), "agent_acme_clarence_coherence_test-room-1"),
        (key("room.1", client="df91fd06", slug="farah"), "agent_df91fd06_farah_room.1"),
    ],
)
def test_readable_name_when_lossless(k: ContainerKey, expected: str) -> None:
    assert container_name(k) == expected


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (key("test-room-1"), key("test-room-2")),
        (key("room a"), key("room_a")),  # both sanitise to room-a
        (key("room a"), key("room-a")),
        (key("Room"), key("room")),
        (key("x" * 120 + "1"), key("x" * 120 + "2")),  # differ only after truncation
        (key("r", client="acme-corp-1"), key("r", client="acme-corp-2")),  # same first 8 chars
        (key("r", client=UUID), key("r", client=UUID[:8])),
        (key("r", slug="a-b"), key("r", slug="a-b", client=UUID.upper())),
    ],
)
def test_different_keys_never_share_a_name(a: ContainerKey, b: ContainerKey) -> None:
    assert container_name(a) != container_name(b)


@pytest.mark.parametrize(
    "k",
    [
        key("test-room-1"),
        key("x" * 128),
        key("ünïcødé room/../.."),
        key("r", slug="s" * 63),
        key("-leading-dash"),
        key("r", client="Acme Corp"),
    ],
)
def test_names_are_valid_docker_names_within_63(k: ContainerKey) -> None:
    name = container_name(k)
    assert len(name) <= NAME_MAX
    assert DOCKER_NAME.match(name), name
    assert name.startswith("agent_")
    assert container_name(k) == name  # deterministic


def test_uuid_client_uses_first_8_and_slug_with_underscores() -> None:
    assert container_name(key("test-room-1")).startswith("agent_df91fd06_clarence_coherence_test-room-1-")


AGENT = Agent(id="a1", slug="farah", name="Farah", instructions="Be kind.")


def test_labels_exact_and_secret_free() -> None:
    created = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)
    labels = container_labels(
        key("Room #1"), agent=AGENT, mode=Mode.text, scope="tenant-a", spec="abc", created_at=created
    )
    assert labels == {
        Label.MANAGED: "true",
        Label.SCOPE: "tenant-a",
        Label.CLIENT_ID: UUID,
        Label.AGENT_SLUG: "clarence-coherence",
        Label.AGENT_ID: "a1",
        Label.ROOM: "Room #1",
        Label.MODE: "text",
        Label.SPEC_HASH: "abc",
        Label.CREATED_AT: "2026-11-21T12:00:00+00:00",
    }
    assert key_from_labels(labels) == key("Room #1")
    assert key_from_labels({Label.ROOM: "x"}) is None


def test_spec_hash_changes_with_config_image_and_mode() -> None:
    base = spec_hash(AGENT, image="img:1", mode=Mode.voice)
    assert base == spec_hash(AGENT, image="img:1", mode=Mode.voice)
    assert base != spec_hash(AGENT.model_copy(update={"instructions": "Be brief."}), image="img:1", mode=Mode.voice)
    assert base != spec_hash(AGENT, image="img:2", mode=Mode.voice)
    assert base != spec_hash(AGENT, image="img:1", mode=Mode.text)


@pytest.mark.parametrize("room", ["", " padded", "a/b", "..\\x", "tab\there", "x" * 129, "nul\x00"])
def test_bad_rooms_rejected(room: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        validate_room(room)
    assert exc.value.details["field"] == "room_name"


@pytest.mark.parametrize("room", ["test-room-1", "Room With Spaces", "ünïcødé", "x" * 128, "agent-123-abc"])
def test_good_rooms_pass(room: str) -> None:
    assert validate_room(room) == room


def test_closest_suggests_near_slugs() -> None:
    known = ["clarence-coherence", "farah", "litebridge"]
    assert closest("clarence-coherance", known) == ["clarence-coherence"]
    assert closest("zzz", known) == []
