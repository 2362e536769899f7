"""Ownership stamps: whose room it is, proven by an HMAC only the orchestrator's key can make (pure).

Room and job metadata are writable by anyone holding an API key of the LiveKit server, so a
`client_id` there is only a claim. The stamp binds client id, room name and the room's creation time
under the deployment's signing key (`Settings.ownership_key`, see services/signing_key.py): another
tenant cannot mint one for a name, and a stamp copied to a later room of the same name by someone
else still names its first owner only if the signer made it for that client.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

STAMP_KEY = "orchestrator_owner"  # {"client_id", "created_at", "sig"} inside the room's (or job's) metadata JSON


def signature(key: bytes, *, client_id: str, room: str, created_at: str) -> str:
    message = "\n".join(("room-owner/v1", client_id, room, created_at)).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def stamp(key: bytes, *, client_id: str, room: str, created_at: datetime) -> dict[str, str]:
    """The stamp to put under STAMP_KEY in a new room's metadata."""
    at = created_at.isoformat()
    return {"client_id": client_id, "created_at": at, "sig": signature(key, client_id=client_id, room=room, created_at=at)}


def _stamp_of(metadata: str) -> dict[str, Any] | None:
    try:
        body = json.loads(metadata) if metadata else None
    except ValueError:
        return None
    value = body.get(STAMP_KEY) if isinstance(body, dict) else None
    return value if isinstance(value, dict) else None


def verified_owner(key: bytes, metadata: str, *, room: str) -> str | None:
    """The client a valid stamp in `metadata` names for `room`; None when there is none or it does not verify."""
    found = _stamp_of(metadata)
    if found is None:
        return None
    client_id, at, sig = found.get("client_id"), found.get("created_at"), found.get("sig")
    if not all(isinstance(v, str) for v in (client_id, at, sig)):
        return None
    assert isinstance(client_id, str) and isinstance(at, str) and isinstance(sig, str)
    return client_id if hmac.compare_digest(sig, signature(key, client_id=client_id, room=room, created_at=at)) else None


def stamped_by(metadata: str) -> bool:
    """Whether the metadata carries a stamp at all (valid or not): a forged one is refused, not re-stamped."""
    return _stamp_of(metadata) is not None


def _claimed(metadata: str) -> str | None:
    try:
        body = json.loads(metadata) if metadata else None
    except ValueError:
        return None
    value = body.get("client_id") if isinstance(body, dict) else None
    return value if isinstance(value, str) else None


def someone_elses(key: bytes, metadata: str, *, client_id: str, room: str) -> str | None:
    """Why a room of this name is provably not (or no longer) `client_id`'s, or None. For observations: a
    room stamped for another client, with a stamp that does not verify, or claiming another client.
    An unstamped room without a claim is not judged here (rooms made before stamps existed)."""
    proven = verified_owner(key, metadata, room=room)
    if proven == client_id:
        return None
    if proven is not None:
        return "a room of this name now belongs to another client"
    if stamped_by(metadata):
        return "the room's ownership stamp does not verify"
    claim = _claimed(metadata)
    if claim is not None and claim != client_id:
        return "the room's metadata names another client"
    return None


def deletable(key: bytes, metadata: str, *, client_id: str, room: str) -> str | None:
    """Why `client_id`'s close must not delete this room, or None: a room provably someone else's (see
    someone_elses) is left alone. An unstamped room without a claim is still deleted: rooms made before
    stamps existed carry none, and the grace metadata of such a room names nobody."""
    return someone_elses(key, metadata, client_id=client_id, room=room)
