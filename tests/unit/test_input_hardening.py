"""Table tests for input edge cases: name forms that must stay disjoint, resume ids, quoted CLI paths,
invisible and bidi characters."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from api.routes.events import resume_after
from api.schemas import SpawnAgentRequest, TriggerAgentRequest
from orchestrator.core.errors import InvalidInput
from orchestrator.core.models import ContainerKey
from orchestrator.rules.naming import HASH_LEN, container_name, validate_room
from orchestrator.cli.views import admin_path

HASHED = re.compile(rf"-[0-9a-f]{{{HASH_LEN}}}$")


def _hashed_name_of(key: ContainerKey) -> str:
    name = container_name(key)
    assert HASHED.search(name), name
    return name


def test_a_lossless_name_never_equals_another_keys_hashed_name() -> None:
    # `call x` is not name-safe, so its name is hashed; a room spelling that hashed tail literally must not
    # get the same name as a lossless readable form.
    hashed = _hashed_name_of(ContainerKey(client_id="acme", agent_slug="farah", room="call x"))
    lookalike = ContainerKey(client_id="acme", agent_slug="farah", room=hashed.removeprefix("agent_acme_farah_"))
    assert container_name(lookalike) != hashed


@pytest.mark.parametrize("room", ["r-0123456789", "call-abcdef0123", "x-ffffffffff", "a.b-0000000000", "test-room-1700000000"])
def test_readable_names_never_take_the_hashed_form(room: str) -> None:
    name = container_name(ContainerKey(client_id="acme", agent_slug="farah", room=room))
    # Rooms whose readable name would look hashed are hashed themselves (so the two forms are disjoint).
    assert name != f"agent_acme_farah_{room}"
    assert HASHED.search(name)


@pytest.mark.parametrize("room", ["call-1", "test-room-170000000", "r-012345678", "r-0123456789a", "R-ABCDEF0123"])
def test_other_rooms_keep_their_readable_name(room: str) -> None:
    assert container_name(ContainerKey(client_id="acme", agent_slug="farah", room=room)) == f"agent_acme_farah_{room}"


@pytest.mark.parametrize(
    ("header", "after", "expected"),
    [
        (None, 0, 0), (None, 7, 7), ("12", 0, 12), ("0", 5, 0),
        ("²", 3, 3), ("٣", 3, 3), ("1²", 0, 0), ("9" * 5000, 4, 4), ("-1", 2, 2), (" 5", 1, 1), ("", 9, 9),
        ("9" * 18, 0, int("9" * 18)),
    ],
)
def test_last_event_id_is_a_plain_bounded_number_or_ignored(header: str | None, after: int, expected: int) -> None:
    assert resume_after(header, after=after) == expected


@pytest.mark.parametrize(
    ("client_id", "room", "path"),
    [
        ("c1", "a%20b", "/api/v1/admin/rooms/c1/a%2520b/close"),
        ("c1", "a b", "/api/v1/admin/rooms/c1/a%20b/close"),
        ("c 1", "r?x#y", "/api/v1/admin/rooms/c%201/r%3Fx%23y/close"),
        ("c1", "..", "/api/v1/admin/rooms/c1/%2E%2E/close"),
    ],
)
def test_cli_quotes_path_segments(client_id: str, room: str, path: str) -> None:
    assert admin_path("rooms", client_id, room, "close") == path


INVISIBLE = ["\u200b", "\u200e", "\u202e", "\u2066", "\u2028", "\u2029", "\ufeff", "\x85", "\u00ad", "\U000e0041"]


@pytest.mark.parametrize("char", INVISIBLE)
def test_invisible_and_bidi_characters_are_refused_in_rooms(char: str) -> None:
    with pytest.raises(InvalidInput) as err:
        validate_room(f"room{char}x")
    assert err.value.details["field"] == "room_name"


@pytest.mark.parametrize("char", INVISIBLE)
@pytest.mark.parametrize("field", ["client_id", "room_name", "user_id"])
def test_invisible_and_bidi_characters_are_422_naming_the_field(char: str, field: str) -> None:
    body = {"agent_slug": "farah", "user_id": "u", "client_id": "acme", "room_name": "r", field: f"a{char}b"}
    with pytest.raises(ValidationError) as err:
        TriggerAgentRequest.model_validate(body)
    assert [e["loc"] for e in err.value.errors()] == [(field,)]
    with pytest.raises(ValidationError):
        SpawnAgentRequest.model_validate({"client_id": f"a{char}b"})


@pytest.mark.parametrize("text", ["café", "Zoë-ÅÄÖ", "会議室", "room 1", "emoji-🎉"])
def test_visible_unicode_still_passes(text: str) -> None:
    assert validate_room(text) == text
    assert TriggerAgentRequest.model_validate({"agent_slug": "farah", "user_id": text, "client_id": text, "room_name": text})
