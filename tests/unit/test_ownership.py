"""Ownership stamps: only the orchestrator's key makes one, bound to client, room and creation time."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from orchestrator.rules.ownership import STAMP_KEY, stamp, stamped_by, verified_owner

KEY, OTHER_KEY = b"k" * 32, b"x" * 32
AT = datetime(2026, 1, 1, tzinfo=timezone.utc)


def meta(**over: str) -> str:
    return json.dumps({"client_id": "a", STAMP_KEY: {**stamp(KEY, client_id="a", room="r1", created_at=AT), **over}})


@pytest.mark.parametrize(("metadata", "room", "key", "owner"), [
    (meta(), "r1", KEY, "a"),                          # ours, for this room
    (meta(), "r2", KEY, None),                         # copied into another room of another name
    (meta(), "r1", OTHER_KEY, None),                   # another deployment's key
    (meta(client_id="b"), "r1", KEY, None),            # the client id edited
    (meta(created_at="2026-01-02T00:00:00+00:00"), "r1", KEY, None),  # the time edited
    (meta(sig="0" * 64), "r1", KEY, None),             # a made-up signature
    (json.dumps({"client_id": "a"}), "r1", KEY, None),  # a bare claim
    ("", "r1", KEY, None),
    ("not json", "r1", KEY, None),
    (json.dumps({STAMP_KEY: "text"}), "r1", KEY, None),
])
def test_only_a_stamp_made_with_the_key_for_that_room_names_an_owner(metadata: str, room: str, key: bytes, owner: str | None) -> None:
    assert verified_owner(key, metadata, room=room) == owner


def test_a_stamp_is_seen_even_when_it_does_not_verify() -> None:
    assert stamped_by(meta(sig="0" * 64)) and not stamped_by(json.dumps({"client_id": "a"}))


@pytest.mark.parametrize(("metadata", "client", "foreign", "deletable"), [
    (meta(), "a", False, True),                                   # ours: observed and deleted as ours
    (meta(), "b", True, False),                                   # stamped for another client
    (meta(sig="0" * 64), "a", True, False),                       # a forged stamp
    (json.dumps({"client_id": "b"}), "a", True, False),           # another client's claim
    (json.dumps({"client_id": "a"}), "a", False, True),           # our claim from before stamps
    ("", "a", False, True),                                       # a bare room (made before stamps): still closed
])
def test_observations_and_closes_recheck_the_owner(metadata: str, client: str, foreign: bool, deletable: bool) -> None:
    from orchestrator.rules.ownership import deletable as may_delete, someone_elses

    assert (someone_elses(KEY, metadata, client_id=client, room="r1") is not None) == foreign
    assert (may_delete(KEY, metadata, client_id=client, room="r1") is None) == deletable
