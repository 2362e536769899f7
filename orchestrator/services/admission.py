"""The agent limits (per room: distinct slugs; per client; per deployment) and what they count.

What the engine shows (one labelled list, or the watch-fed view) can miss this process's own newest
containers: a list asked for before a creation finished, a view whose event has not arrived yet. So
creations in flight and recent ones are counted too, and concurrent triggers here cannot overshoot;
two orchestrator processes may still overshoot by their in-flight count.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from orchestrator.core.errors import LimitExceeded
from orchestrator.core.models import ContainerInfo, ContainerKey
from orchestrator.rules.naming import container_name, key_from_labels
from orchestrator.runtime import ContainerRuntime
from orchestrator.services.answers import ViewAnswers
from orchestrator.rules.view import AgentView
from orchestrator.settings import Settings

VIEW_LAG_S = 10.0  # a creation the view has not shown is counted on top of it this long (far beyond a watch's lag)


def _never(_: str) -> bool:
    return False


@dataclass
class _Made:
    number: int  # creations are numbered in order; a list asked for at number n may miss every later one
    at: float
    container_id: str | None  # None when this process made nothing (lost the name race, or failed)
    seen: bool = False  # the view has shown it: from then on the view alone counts it (or, once gone, not)


class Admissions:
    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self.in_flight: set[ContainerKey] = set()
        self._created: dict[ContainerKey, _Made] = {}
        self._listing: list[int] = []  # the creation number at the start of each pending list
        self._creations = 0

    def listing(self) -> int:
        """A list is being asked for: returns its token (give it to `listed` and `admit`)."""
        self._listing.append(self._creations)
        return self._creations

    def listed(self, token: int) -> None:
        self._listing.remove(token)

    def admit(
        self, key: ContainerKey, shown: Iterable[ContainerInfo], *, asked_at: int | None, reserve: bool = True,
        deleted: Callable[[str], bool] = _never,
    ) -> None:
        """Raise LimitExceeded (429 + Retry-After) when `key` would break a limit; else (with `reserve`) count it
        as in flight.

        `asked_at` is the token of the list `shown` came from, or None for the watch-fed view.
        """
        refused = self.refusal(key, shown, asked_at=asked_at, deleted=deleted)
        if refused is not None:
            raise refused
        if reserve:
            self.in_flight.add(key)

    def refusal(
        self, key: ContainerKey, shown: Iterable[ContainerInfo], *, asked_at: int | None, reserved: Collection[ContainerKey] = (),
        deleted: Callable[[str], bool] = _never,
    ) -> LimitExceeded | None:
        """The limit `key` would break, or None; counts nothing in flight (a dispatch offer asks before it accepts).

        `reserved`: keys promised elsewhere but not launched yet, counted like creations in flight.
        `deleted`: whether the view saw a container id deleted (AgentView.saw_deleted): a creation the view
        has seen come and go counts no more, even if nobody asked the view while it was running.
        """
        s, now, shown = self._settings, self._clock(), list(shown)
        live = {k for c in shown if not c.status.gone and (k := key_from_labels(c.labels)) is not None}
        if asked_at is None:  # the view: count what it has not shown yet
            ids = {c.id for c in shown}
            for made in self._created.values():
                made.seen |= made.container_id in ids or (made.container_id is not None and deleted(made.container_id))
            recent = {k for k, m in self._created.items() if m.container_id and not m.seen and now - m.at < VIEW_LAG_S}
        else:  # a list: count what was made after it was asked for
            recent = {k for k, m in self._created.items() if m.number > asked_at}
        live |= self.in_flight | recent | set(reserved)
        self._prune(now)
        live.discard(key)
        checks = [
            (sum(k.client_id == key.client_id and k.room == key.room for k in live), s.max_agents_per_room,
             f"room '{key.room}' already has {s.max_agents_per_room} agents (max_agents_per_room)"),
            (sum(k.client_id == key.client_id for k in live), s.max_agents_per_client,
             f"client '{key.client_id}' already runs {s.max_agents_per_client} agents (max_agents_per_client)"),
            (len(live), s.max_agents_total, f"this deployment already runs {s.max_agents_total} agents (max_agents_total)"),
        ]
        for used, limit, message in checks:
            if used >= limit:
                return LimitExceeded(message, retry_after=s.limit_retry_after_s, details={"rule": message})
        return None

    def finished(self, key: ContainerKey, *, container_id: str | None) -> None:
        """A creation ended (made: its id; lost the name race or failed: None): from in flight to recent."""
        self.in_flight.discard(key)
        self._creations += 1
        now = self._clock()
        self._created[key] = _Made(number=self._creations, at=now, container_id=container_id)
        self._prune(now)

    def _prune(self, now: float) -> None:
        """Keep a creation while a list that may predate it is pending, or a view may not show it yet."""
        oldest = min(self._listing, default=self._creations)
        self._created = {
            k: m for k, m in self._created.items() if m.number > oldest or (not m.seen and now - m.at < VIEW_LAG_S)
        }


class AdmissionGate:
    """The limits as the trigger and dispatch ask for them: counted from the watch-fed view when it is synced,
    else from one labelled list (with this process's creations in flight and recent on top: Admissions)."""

    def __init__(self, *, settings: Settings, runtime: ContainerRuntime, view: AgentView | None, answers: ViewAnswers) -> None:
        self._settings = settings
        self._runtime = runtime
        self._view = view
        self._answers = answers
        self.counts = Admissions(settings)

    async def needed(self, key: ContainerKey) -> bool:
        """Whether this trigger may create a container (then the limits apply): none of the key is live."""
        if self._answers.running(key) is not None:
            return False
        if self._answers.synced:
            return self._answers.all_gone(key)
        existing = await self._runtime.get(container_name(key))
        return existing is None or existing.status.gone

    async def admit(self, key: ContainerKey, *, reserve: bool = True) -> None:
        """Raise LimitExceeded over a limit; else (with `reserve`) count `key` as in flight until `finished`.

        `reserve=False` only checks (before the room is made: a refusal must leave no LiveKit room behind)."""
        if self._view is not None and self._view.synced:
            self.counts.admit(key, self._view.state.containers(), asked_at=None, reserve=reserve, deleted=self._view.saw_deleted)
            return
        asked_at, listed = await self._listed()
        self.counts.admit(key, listed, asked_at=asked_at, reserve=reserve)

    async def refusal(self, key: ContainerKey, *, reserved: Collection[ContainerKey] = ()) -> LimitExceeded | None:
        """Why a new container for `key` would be over a limit now, or None; changes nothing.

        `reserved`: keys a caller has promised but not launched yet (dispatch jobs accepted before LiveKit
        assigns them)."""
        if self._view is not None and self._view.synced:
            return self.counts.refusal(
                key, self._view.state.containers(), asked_at=None, reserved=reserved, deleted=self._view.saw_deleted,
            )
        asked_at, listed = await self._listed()
        return self.counts.refusal(key, listed, asked_at=asked_at, reserved=reserved)

    def finished(self, key: ContainerKey, *, container_id: str | None) -> None:
        self.counts.finished(key, container_id=container_id)

    async def _listed(self) -> tuple[int, list[ContainerInfo]]:
        asked_at = self.counts.listing()
        try:
            return asked_at, await self._runtime.list_managed(scope=self._settings.scope)
        finally:
            self.counts.listed(asked_at)
