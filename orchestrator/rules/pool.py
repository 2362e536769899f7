"""Pure warm-pool rules: the pool key, member names and labels, sizing, recycling and the claim state machine.

A member is a hardened agent container made from the cold spec with every tenant field taken out; the
pool it belongs to is the hash of what is left (engine, network, image, runtime class, resources,
hardening), so a claimed agent is exactly as isolated as a cold one and pools never mix domains.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

from orchestrator.rules.naming import LABEL_PREFIX, NAME_PREFIX, Label, label_time

POOL = LABEL_PREFIX + "pool"  # on a member: the pool's hash (its isolation domain)
POOL_IMAGE = LABEL_PREFIX + "pool-image"  # the image id the member was made from (drift when the tag moves)
POOL_MEMBER = LABEL_PREFIX + "pool-member"  # on a claim record: the member container's id
POOL_NAME = LABEL_PREFIX + "pool-name"  # on a claim record: the name the claim renames the member to
POOL_CLAIM = LABEL_PREFIX + "pool-claim"  # on a claim record: the claimant's nonce (who won the member)
WARM_MODE = LABEL_PREFIX + "warm-mode"  # on an image: it can wait warm; the value is the handover protocol
WARM_PROTOCOL = "stdin-v1"  # the assignment line on the member's stdin (Docker: attach through the engine API)
LOBBY_PROTOCOL = "livekit-lobby-v1"  # a server data packet to the member waiting in a LiveKit lobby room (Swarm)
POOL_IDENTITY = LABEL_PREFIX + "pool-identity"  # on a lobby member: its identity in the lobby (no secret)
MEMBER_PREFIX = "pool_"
RECORD_PREFIX = "agent-claim_"
# The cold spec's tenant fields; everything else of the spec is the pool's identity.
TENANT_FIELDS = frozenset({"name", "labels", "env"})


def pool_hash(*, engine: str, spec: Mapping[str, Any]) -> str:
    """The isolation domain of a spec (ContainerSpec.model_dump()): same hash = interchangeable members."""
    body = {k: v for k, v in spec.items() if k not in TENANT_FIELDS}
    raw = json.dumps({"engine": engine, **body}, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:12]


SANDBOXED = ("runsc", "gvisor", "kata")  # runtime names whose first WebRTC connect is slow (their own kernel or VM)


def handover_for(*, setting: str, offered: tuple[str, ...], runtime: str | None) -> str:
    """The pool's handover protocol: the setting's when the engine offers it; `auto`: a lobby for a sandboxed runtime
    when the engine offers one (a gVisor member claimed over stdin made its first connect after the claim: 1.4 s to
    listed, against 0.26 s from a lobby, where it connected while waiting), else the engine's own (its first)."""
    if setting == "auto":
        sandboxed = any(mark in (runtime or "").lower() for mark in SANDBOXED)
        return LOBBY_PROTOCOL if sandboxed and LOBBY_PROTOCOL in offered else offered[0]
    if setting not in offered:
        raise ValueError(f"ORCH_POOL_HANDOVER={setting}: this engine offers {', '.join(offered)} (or auto)")
    return setting


def lobby_token_line(token: str) -> bytes:
    """A lobby member's token as the engine writes it to its stdin (Docker): never in its env (agent_image.warm)."""
    return json.dumps({"lobby_token": token}, separators=(",", ":")).encode() + b"\n"


def protocols(label: str | None) -> frozenset[str]:
    """The handover protocols an image's warm-mode label lists (comma-separated; `stdin-v1` alone before Swarm)."""
    return frozenset(p.strip() for p in (label or "").split(",") if p.strip())


def lobby_room(*, scope: str, pool: str) -> str:
    """The LiveKit room a pool's members wait in: one per scope and pool, so a restarted orchestrator knows it."""
    return f"orch-lobby-{scope[:24]}-{pool}"


def member_name(*, scope: str, pool: str, nonce: str) -> str:
    """`pool_<scope>_<pool>_<nonce>`: never `agent_…`, so an idle member is no agent to `docker ps | grep agent_`."""
    return f"{MEMBER_PREFIX}{scope[:16]}_{pool}_{nonce}"


def member_labels(*, scope: str, pool: str, image_id: str, created_at: str) -> dict[str, str]:
    """A member's labels: its scope and pool, no `managed` (it is no agent) and nothing of any tenant."""
    return {Label.SCOPE: scope, POOL: pool, POOL_IMAGE: image_id, Label.CREATED_AT: created_at}


def record_name(member_id: str) -> str:
    """One record per member: the engine makes a name once (Docker's volume create answers the record already
    there, labels and all), so of claimants racing for a member exactly one finds its own claim nonce in it."""
    return f"{RECORD_PREFIX}{member_id[:24]}"


def is_canonical(name: str) -> bool:
    """A claimed member carries its key's name (naming.container_name); an idle one its pool name."""
    return name.startswith(NAME_PREFIX)


def claimed_labels(*, member_labels: Mapping[str, str], record: Mapping[str, str] | None) -> dict[str, str]:
    """What a claimed member is, for everything that reads labels: its record's key labels (managed, scope,
    client, agent, room, mode, spec, created-at) over the member's own. Without a record it stays unkeyed,
    `managed` only: the planner removes it as an orphan (renamed by a claimer that lost its record)."""
    base = {**member_labels, Label.MANAGED: "true"}
    if record is None:
        return base
    return {**base, **{k: v for k, v in record.items() if k not in (POOL_MEMBER, POOL_NAME)}}


# Docker keeps a container's last health verdict until its next check (every 3 s, `Dockerfile.agent`): a member
# claimed right after a failed check (a slow check on a busy host) would read as an unhealthy agent.
HEALTH_SETTLE_S = 10.0


def health_predates_claim(claimed_at: str | None, *, now: datetime) -> bool:
    """Whether a claimed member's health verdict may still be from before its claim (then it counts as starting)."""
    claimed = label_time(claimed_at)
    return claimed is not None and (now - claimed).total_seconds() < HEALTH_SETTLE_S


# ---- sizing -------------------------------------------------------------------------------------------------

BURST_SPAN_S = 10.0  # a burst: the claims of one pool within this many seconds
PEAK_MEMORY_S = 3600.0  # how long the pool keeps the size of the largest burst it has seen


class ClaimRate:
    """Claims per second over a sliding window, and the largest burst of the last hour (times passed in: monotonic
    seconds). The rate sizes the pool for steady traffic; the peak for bursts, which a rate measured after the
    burst began cannot foresee: a pool that met 100 rooms at once keeps 100 members (up to its maximum) for an hour."""

    def __init__(self, *, window_s: float = 60.0, span_s: float = BURST_SPAN_S, memory_s: float = PEAK_MEMORY_S,
                 cap: int = 10_000) -> None:
        self.window_s = window_s
        self.span_s = span_s
        self.memory_s = memory_s
        self._at: deque[float] = deque(maxlen=cap)
        self._peaks: deque[tuple[int, int]] = deque()  # (minute, most claims within one span ending that minute)

    def record(self, now: float) -> None:
        self._at.append(now)
        in_span = 0
        for t in reversed(self._at):
            if now - t >= self.span_s:
                break
            in_span += 1
        minute = int(now // 60)
        if self._peaks and self._peaks[-1][0] == minute:
            self._peaks[-1] = (minute, max(self._peaks[-1][1], in_span))
        else:
            self._peaks.append((minute, in_span))

    def per_second(self, now: float) -> float:
        while self._at and now - self._at[0] > self.window_s:
            self._at.popleft()
        if not self._at:
            return 0.0
        return len(self._at) / self.window_s

    def peak(self, now: float) -> int:
        """The most claims seen within one span (BURST_SPAN_S) in the last `memory_s`."""
        while self._peaks and now - (self._peaks[0][0] + 1) * 60 > self.memory_s:
            self._peaks.popleft()
        return max((n for _, n in self._peaks), default=0)


def target_size(*, minimum: int, maximum: int, claims_per_s: float, warm_time_s: float, peak: int = 0,
                headroom: float = 2.0) -> int:
    """Little's law: members in flight while being made = rate × warm time, `headroom` for what the average hides;
    and at least the largest recent burst (`peak`, ClaimRate.peak), which the rate only learns once it has begun."""
    wanted = max(math.ceil(claims_per_s * warm_time_s * headroom), peak)
    return max(minimum, min(maximum, wanted))


def smoothed(previous: float | None, sample: float, *, weight: float = 0.3) -> float:
    """The warm time the sizing uses: an exponential average of the last members' making (the first sample as is),
    so a loaded engine that makes members in 5 s instead of 1.5 s gets a pool sized for that."""
    return sample if previous is None else previous + weight * (sample - previous)


def to_create(*, target: int, idle: int, creating: int, concurrency: int) -> int:
    """How many members to start making now: the gap to the target, bounded by the refill concurrency."""
    return max(0, min(target - idle - creating, concurrency - creating))


# ---- the claim state machine --------------------------------------------------------------------------------

class MemberState(str, enum.Enum):
    idle = "idle"  # pool name, no record: claimable
    reserved = "reserved"  # pool name + record: a claim between its two steps (or a claimer that died there)
    claimed = "claimed"  # canonical name + record: an agent serving its key (the view's, not the pool's)
    stray = "stray"  # canonical name, no record: a claimer lost its record; an orphan to the planner
    dead = "dead"  # exited before any claim


NEVER_STARTED_S = 60.0  # a member still `created` this long after it was made will never start


def alive(*, gone: bool, created: bool, age_s: float) -> bool:
    """Whether a member counts as running for the sweep: not gone, and not stuck in `created` (its start failed under
    load and so did the removal of it; never claimable, it outlived its deployment, found after a loaded test run)."""
    return not gone and not (created and age_s > NEVER_STARTED_S)


class Verdict(str, enum.Enum):
    keep = "keep"
    recycle_age = "recycle-age"
    recycle_drift = "recycle-drift"
    recycle_unwanted = "recycle-unwanted"  # its pool is not wanted any more (a spec changed)
    remove_dead = "remove-dead"
    # A reservation that never became a claim: member and record go (a slow claimer's rename then fails and it
    # starts cold), never back to idle, so no assignment can reach a member twice.
    remove_reserved = "remove-reserved"
    leave = "leave"  # an agent now: the reconciler's business


def state_of(*, name: str, has_record: bool, running: bool) -> MemberState:
    if is_canonical(name):
        return MemberState.claimed if has_record else MemberState.stray
    if not running:
        return MemberState.dead
    return MemberState.reserved if has_record else MemberState.idle


@dataclass(frozen=True)
class MemberFacts:
    name: str
    has_record: bool
    running: bool
    age_s: float
    record_age_s: float | None
    image_id: str
    pool: str


def verdict(
    m: MemberFacts, *, current_image: Mapping[str, str], wanted: frozenset[str], max_age_s: float, reserve_timeout_s: float,
) -> Verdict:
    """What the pool does with one member. `current_image`: pool → the image id its tag names now."""
    state = state_of(name=m.name, has_record=m.has_record, running=m.running)
    if state in (MemberState.claimed, MemberState.stray):
        return Verdict.leave
    if state is MemberState.dead:
        return Verdict.remove_dead
    if state is MemberState.reserved:
        stale = m.record_age_s is not None and m.record_age_s > reserve_timeout_s
        return Verdict.remove_reserved if stale else Verdict.keep
    if m.pool not in wanted:
        return Verdict.recycle_unwanted
    now_image = current_image.get(m.pool)
    if now_image is not None and now_image != m.image_id:
        return Verdict.recycle_drift
    if m.age_s > max_age_s:
        return Verdict.recycle_age
    return Verdict.keep


def with_memory(snapshot: Mapping[str, Any], memory: Mapping[str, int]) -> dict[str, Any]:
    """The pool snapshot with what its idle members use (the usage sampler's last pass): each member's
    `memory_bytes`, each pool's `memory_used_bytes` (the sum over its members sampled; None before any was)."""
    members = [{**m, "memory_bytes": memory.get(m["name"])} for m in snapshot.get("members", [])]
    used: dict[str, int] = {}
    for m in members:
        if m["memory_bytes"] is not None:
            used[m["domain"]] = used.get(m["domain"], 0) + m["memory_bytes"]
    pools = [{**p, "memory_used_bytes": used.get(p["pool"])} for p in snapshot.get("pools", [])]
    return {**snapshot, "pools": pools, "members": members}


def stamp_age(stamp: str | None, now: datetime) -> float:
    """Seconds since an ISO created-at label; 0 when it is missing or does not parse (treated as new, so kept)."""
    at = label_time(stamp)
    return 0.0 if at is None else max(0.0, (now - at).total_seconds())
