"""Pure naming rules: agent slugs, container names, labels and spec hashes.

Nothing here does I/O. These rules are what makes `clarence_coherence` and
`clarence-coherence` the same agent, and what makes two rooms never share a container.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import re
import unicodedata
from datetime import datetime, timezone
from typing import Mapping

from orchestrator.core.errors import InvalidInput
from orchestrator.core.models import Agent, ContainerKey, Mode

SLUG_MAX = 63
ROOM_MAX = 128
NAME_MAX = 63
NAME_PREFIX = "agent_"
RETIRED_PREFIX = "retired_"  # a dead agent set aside while its replacement starts (runtime.NameRelease)
HASH_LEN = 10

SLUG_RULE = "lowercase letters and digits in words joined by single dashes (e.g. clarence-coherence), at most 63 characters"
ROOM_RULE = "1-128 printable characters with no slash, backslash, control, invisible or bidi characters"

_SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_ROOM_BAD = re.compile(r"[\x00-\x1f\x7f/\\]")
_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9.-]")
_HASHED_TAIL = re.compile(rf"-[0-9a-f]{{{HASH_LEN}}}$")
_INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp"})

LABEL_PREFIX = "agent-orchestrator."


class Label:
    """Label keys; values are the exact (unsanitised) identifiers, never secrets."""

    MANAGED = LABEL_PREFIX + "managed"
    SCOPE = LABEL_PREFIX + "scope"
    CLIENT_ID = LABEL_PREFIX + "client-id"
    AGENT_SLUG = LABEL_PREFIX + "agent-slug"
    AGENT_ID = LABEL_PREFIX + "agent-id"
    ROOM = LABEL_PREFIX + "room"
    MODE = LABEL_PREFIX + "mode"
    SPEC_HASH = LABEL_PREFIX + "spec-hash"
    CREATED_AT = LABEL_PREFIX + "created-at"
    # Set only on containers launched for a job LiveKit dispatched (the job that launched it).
    JOB_ID = LABEL_PREFIX + "job-id"
    DISPATCH_ID = LABEL_PREFIX + "dispatch-id"


def normalise_slug(raw: str) -> str:
    """Trim, lowercase, map `_` and whitespace to `-`, collapse repeats and strip edge dashes."""
    slug = re.sub(r"[\s_]+", "-", raw.strip().lower())
    slug = re.sub(r"-{2,}", "-", slug)
    return slug.strip("-")


def validate_slug(slug: str) -> str:
    """Return `slug` if it satisfies SLUG_RULE, else raise InvalidInput naming the rule."""
    if not slug or len(slug) > SLUG_MAX or not _SLUG_RE.fullmatch(slug):
        raise InvalidInput(f"agent_slug must be {SLUG_RULE}", details={"field": "agent_slug", "rule": SLUG_RULE})
    return slug


def clean_slug(raw: str) -> str:
    """normalise_slug then validate_slug: the one entry point callers use."""
    return validate_slug(normalise_slug(raw))


def has_invisible(text: str) -> bool:
    """Control, format (zero-width, bidi overrides, tags) and line/paragraph separator characters:
    they make two names look alike, or reorder what logs, `ps` and the dashboard show."""
    return any(unicodedata.category(ch) in _INVISIBLE for ch in text)


def validate_room(room: str) -> str:
    """LiveKit accepts almost any room name; we refuse the ones that break paths, logs or labels."""
    if not room or len(room) > ROOM_MAX or _ROOM_BAD.search(room) or room != room.strip() or has_invisible(room):
        raise InvalidInput(f"room_name must be {ROOM_RULE}", details={"field": "room_name", "rule": ROOM_RULE})
    return room


# Entries kept by each per-key cache (keys, names, created-at labels). Every room ever seen is a new entry, so the
# size is memory a long-lived process keeps for good (~2 KB an entry over the three): 1,024 covers twenty times the
# default agent limit; a pass over more live agents than that recomputes what falls out (microseconds a key).
KEY_CACHE = 1024


def short_hash(*parts: str, length: int = HASH_LEN) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:length]


@functools.lru_cache(maxsize=KEY_CACHE)
def container_name(key: ContainerKey) -> str:
    """`agent_<client8>_<slug_with_underscores>_<room>`, deterministic and at most 63 chars.

    When the readable form loses information (client id longer than 8 characters or not
    name-safe, a room with characters Docker refuses, or truncation), a hash of the exact key is
    appended, so two different keys can never share a name.
    """
    client_part = _NAME_UNSAFE.sub("-", key.client_id)[:8].lower()
    room_part = _NAME_UNSAFE.sub("-", key.room)
    readable = f"{NAME_PREFIX}{client_part}_{key.agent_slug.replace('-', '_')}_{room_part}"
    lossless = (
        client_part == key.client_id and room_part == key.room and len(readable) <= NAME_MAX
        and not _HASHED_TAIL.search(readable)  # a readable name never looks hashed: the two forms stay disjoint
    )
    if lossless:
        return readable
    digest = short_hash(key.client_id, key.agent_slug, key.room)
    head = readable[: NAME_MAX - HASH_LEN - 1].rstrip("_.-")
    return f"{head}-{digest}"


def retired_name(container_id: str) -> str:
    """The name a dead agent is set aside under (runtime.NameRelease): no agent's, no member's, one per container."""
    return f"{RETIRED_PREFIX}{container_id[:12]}"


def spec_hash(agent: Agent, *, image: str, mode: Mode) -> str:
    """A stable digest of everything that shapes a running agent; a change marks it stale."""
    body = {"agent": agent.model_dump(mode="json"), "image": image, "mode": mode.value}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def container_labels(
    key: ContainerKey, *, agent: Agent, mode: Mode, scope: str, spec: str, created_at: datetime
) -> dict[str, str]:
    """The labels that make Docker the source of truth; no secret is ever among them."""
    return {
        Label.MANAGED: "true",
        Label.SCOPE: scope,
        Label.CLIENT_ID: key.client_id,
        Label.AGENT_SLUG: key.agent_slug,
        Label.AGENT_ID: agent.id,
        Label.ROOM: key.room,
        Label.MODE: mode.value,
        Label.SPEC_HASH: spec,
        Label.CREATED_AT: created_at.isoformat(),
    }


@functools.lru_cache(maxsize=KEY_CACHE)
def label_time(label: str | None) -> datetime | None:
    """A time we wrote into a label (`created_at.isoformat()`, a claim's time) as aware UTC; None when missing or
    unreadable. One reading for the planner and the pool; cached, as the same labels are read on every pass."""
    if not label:
        return None
    try:
        value = datetime.fromisoformat(label)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def key_from_labels(labels: Mapping[str, str]) -> ContainerKey | None:
    """The key a managed container claims, or None when its labels are incomplete."""
    try:
        return _key(labels[Label.CLIENT_ID], labels[Label.AGENT_SLUG], labels[Label.ROOM])
    except KeyError:
        return None


@functools.lru_cache(maxsize=KEY_CACHE)
def _key(client_id: str, agent_slug: str, room: str) -> ContainerKey:
    """Keys are immutable: one validated object per distinct key (a pass over thousands asks for each often)."""
    return ContainerKey(client_id=client_id, agent_slug=agent_slug, room=room)


AGENT_IDENTITY_PREFIX = "agent-"


def agent_identity(slug: str) -> str:
    """The fixed LiveKit identity of an agent in a room: LiveKit itself kicks a duplicate."""
    return f"{AGENT_IDENTITY_PREFIX}{slug}"


def closest(wanted: str, candidates: list[str], *, n: int = 3) -> list[str]:
    """Known slugs nearest to an unknown one, for the 404's 'did you mean'."""
    return difflib.get_close_matches(wanted, candidates, n=n, cutoff=0.5)


def generated_room(agent_id: str, suffix: str) -> str:
    """The existing frontend's convention for rooms the caller did not name: `agent-<agent_id>-<8 hex>`."""
    return f"agent-{agent_id}-{suffix}"
