"""Pure lifecycle rules of an agent in its room: who counts as human, the failsafe, exit codes."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class Exit(enum.IntEnum):
    """Process exit codes: 0 is a normal end (Docker's on-failure policy leaves it be), the rest restart."""

    OK = 0
    CRASH = 1
    CONFIG = 2
    UNREACHABLE = 3
    CONNECTION_LOST = 4


class Kind(str, enum.Enum):
    """LiveKit participant kinds (names as in the protocol, without the PARTICIPANT_KIND_ prefix)."""

    standard = "STANDARD"
    ingress = "INGRESS"
    egress = "EGRESS"
    sip = "SIP"
    agent = "AGENT"
    connector = "CONNECTOR"
    bridge = "BRIDGE"
    unknown = "UNKNOWN"

    @classmethod
    def from_name(cls, name: str) -> "Kind":
        try:
            return cls(name.removeprefix("PARTICIPANT_KIND_"))
        except ValueError:
            return cls.unknown


# People in a browser and people on the phone. Recorders, ingress streams and other agents are not
# someone to talk to, so they neither keep the room alive nor get answers (two agents would chat forever).
HUMAN_KINDS = frozenset({Kind.standard, Kind.sip})


def is_human(kind: Kind) -> bool:
    return kind in HUMAN_KINDS


@dataclass(frozen=True)
class Headcount:
    humans: int
    agents: int


def headcount(kinds: Iterable[Kind]) -> Headcount:
    kinds = list(kinds)
    return Headcount(humans=sum(is_human(k) for k in kinds), agents=sum(k is Kind.agent for k in kinds))


class Failsafe:
    """Leave when no human has been in the room for `after_s` (grace + margin), counted from joining.

    The orchestrator normally stops the container after its grace period; this only fires when the
    orchestrator is gone, so a forgotten agent never sits in an empty room forever. Time is passed in
    (monotonic seconds), so the rule is testable without a clock.
    """

    def __init__(self, *, after_s: float, now: float) -> None:
        self.after_s = after_s
        self._alone_since: float | None = now

    def observe(self, *, now: float, humans: int) -> None:
        if humans > 0:
            self._alone_since = None
        elif self._alone_since is None:
            self._alone_since = now

    def alone_for(self, now: float) -> float:
        return 0.0 if self._alone_since is None else max(0.0, now - self._alone_since)

    def expired(self, now: float) -> bool:
        return self._alone_since is not None and now - self._alone_since >= self.after_s


# Reasons LiveKit gives when it removed us on purpose: restarting would only fight that decision
# (a DUPLICATE_IDENTITY restart would kick the newer agent, which then kicks us, forever).
_DELIBERATE = frozenset({"CLIENT_INITIATED", "DUPLICATE_IDENTITY", "PARTICIPANT_REMOVED", "ROOM_DELETED", "ROOM_CLOSED"})


def exit_for_disconnect(reason: str) -> Exit:
    """Map a DisconnectReason name to the exit code: deliberate ends are 0, lost connections restart."""
    return Exit.OK if reason in _DELIBERATE else Exit.CONNECTION_LOST
