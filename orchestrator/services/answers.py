"""Reuse answers given from the watch-fed view, kept a few seconds so a death the watch reports late re-settles them."""

from __future__ import annotations

import time
from collections.abc import Callable

from orchestrator.core.models import ContainerInfo, ContainerKey
from orchestrator.rules.naming import key_from_labels
from orchestrator.rules.view import AgentView

RECHECK_S = 10.0  # a death reported this soon after a reuse answer from the view re-settles the key
_PRUNE_AT = 10_000  # deaths pop entries; prune what no event ever came for past this many


class ViewAnswers:
    """Answers "is this key's agent running?" from the view, and remembers each yes it gave."""

    def __init__(self, view: AgentView | None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._view = view
        self._clock = clock
        self._given: dict[ContainerKey, float] = {}  # key → when a reuse answer named it

    @property
    def synced(self) -> bool:
        return self._view is not None and self._view.synced

    def running(self, key: ContainerKey) -> ContainerInfo | None:
        """The key's running container from the watch-fed view; None (ask the engine) on any doubt."""
        if self._view is None or not self._view.synced:
            return None
        running = [c for c in self._view.state.for_key(key) if c.status.reusable]
        return running[0] if len(running) == 1 else None  # a duplicate is the engine's (and reconciler's) call

    def all_gone(self, key: ContainerKey) -> bool:
        """Whether the synced view shows none of the key alive (callers check `synced` first)."""
        assert self._view is not None
        return all(c.status.gone for c in self._view.state.for_key(key))

    def unseen(self, key: ContainerKey) -> bool:
        """Whether the synced view has no container of the key at all: a start may create without asking the
        engine first (a container the view has not seen yet makes the create fail on its name, NameTaken)."""
        return self._view is not None and self._view.synced and not self._view.state.for_key(key)

    def answer(self, key: ContainerKey) -> ContainerInfo | None:
        """`running`, remembered when it is a yes (the answer may be stale by the watch's lag)."""
        seen = self.running(key)
        if seen is not None:
            now = self._clock()
            if len(self._given) > _PRUNE_AT:
                self._given = {k: t for k, t in self._given.items() if t > now - RECHECK_S}
            self._given[key] = now
        return seen

    def contradicted(self, info: ContainerInfo | None) -> ContainerKey | None:
        """The key of a container the watch now reports dead or gone, if a reuse answer named it from the view
        within the last few seconds: that answer may have been stale by the event's lag, so settle it again."""
        key = key_from_labels(info.labels) if info is not None else None
        at = self._given.pop(key, None) if key is not None else None
        return key if at is not None and self._clock() - at < RECHECK_S else None

    def forget(self, client_id: str, room: str) -> None:
        """Its agents are being stopped on purpose (room closed, agent stopped): their deaths are no stale answer."""
        for key in [k for k in self._given if (k.client_id, k.room) == (client_id, room)]:
            self._given.pop(key, None)

    def __len__(self) -> int:
        return len(self._given)
