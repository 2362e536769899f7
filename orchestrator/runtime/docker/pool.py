"""Warm pool members on one Docker engine: made, listed, claimed (record + rename) and handed their assignment.

Docker labels cannot change after create, so a claim is two atomic engine steps:
1. a claim record: a volume `agent-claim_<member id>` whose labels are the key's container labels (the
   volume holds no data and is never mounted: it is a label-carrying object the engine keeps for us). The engine
   makes a volume name once, so the record is also the claim's mutex: one claimant per member finds its nonce;
2. a rename of the member to its key's canonical name (naming.container_name): Docker's name uniqueness makes
   it atomic, a 409 means another container serves the key, a 404 that another process took the member.
Every reader (list_managed, get, the watch) reports a renamed member with its record's labels, so the view,
the reconciler, `docker ps | grep agent_`, a restarted orchestrator and a second process all find the agent
by its key from the engine alone. Idle members have no `managed` label: they are never agents.
"""

from __future__ import annotations

import contextlib
import functools
import secrets

import anyio
import requests
import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

from docker.errors import APIError, NotFound

from orchestrator.core.errors import DependencyUnavailable
from orchestrator.core.clock import utcnow
from orchestrator.core.models import ContainerInfo, Health
from orchestrator.rules import pool as rules
from orchestrator.rules.naming import Label
from orchestrator.runtime import ContainerSpec, MemberGone, NameTaken
from orchestrator.runtime.docker.runtime import DockerRuntime
from orchestrator.runtime.docker.spec import info_from_inspect, info_from_list, with_last_exit

log = logging.getLogger(__name__)


class PooledDockerRuntime(DockerRuntime):
    """DockerRuntime that also keeps warm pool members (runtime.WarmPoolEngine)."""

    # stdin (attach through the engine API) first; a lobby pool's members get their lobby token the same way.
    handovers = (rules.WARM_PROTOCOL, rules.LOBBY_PROTOCOL)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # (member id, name it was renamed to) -> the claim record's labels; records never change, only go.
        self._records: dict[tuple[str, str], dict[str, str]] = {}
        # Handovers get worker threads of their own: in a burst, cold creates hold the shared ones for seconds,
        # and a handover queued behind them would miss its bound and waste a warm member.
        self._handover_limiter = anyio.CapacityLimiter(8)

    # ---- readers: a claimed member is its key's container -------------------------------------------------

    def _records_now(self, scope: str) -> dict[tuple[str, str], dict[str, str]]:
        vols = self.client.api.volumes(filters={"label": [rules.POOL_MEMBER, f"{Label.SCOPE}={scope}"]})
        found = {}
        for v in (vols or {}).get("Volumes") or []:
            labels = v.get("Labels") or {}
            if rules.POOL_MEMBER in labels and rules.POOL_NAME in labels:
                found[(labels[rules.POOL_MEMBER], labels[rules.POOL_NAME])] = labels
        self._records = found  # the volumes are the truth: a released member's record goes with its volume (no growth)
        return found

    def _as_agent(self, info: ContainerInfo) -> ContainerInfo | None:
        """An agent container as it is; a claimed member with its record's labels; an idle member: None."""
        if rules.POOL not in info.labels:
            return info
        if not rules.is_canonical(info.name):
            return None
        if (info.id, info.name) not in self._records:
            self._records_now(info.labels.get(Label.SCOPE, ""))
        record = self._records.get((info.id, info.name))
        update: dict[str, Any] = {"labels": rules.claimed_labels(member_labels=info.labels, record=record)}
        if info.health is Health.unhealthy and rules.health_predates_claim((record or {}).get(Label.CREATED_AT), now=utcnow()):
            update["health"] = Health.starting  # a verdict from its idle time (a slow check under load), not the agent's
        # A key restarted after a failure shows why, as a cold agent restarted in place does (runtime._seen).
        return with_last_exit(info.model_copy(update=update), self._last_exit.get(info.name))

    async def get(self, name: str) -> ContainerInfo | None:
        def inspect() -> ContainerInfo | None:
            try:
                info = info_from_inspect(self.client.api.inspect_container(name))
            except NotFound:
                return None
            return self._as_agent(info)

        return await self._call("inspect", inspect)

    async def list_managed(self, *, scope: str) -> list[ContainerInfo]:
        """One list call on the scope label: agents, and claimed members as their keys' containers."""
        def listed() -> list[ContainerInfo]:
            rows = self.client.api.containers(all=True, filters={"label": [f"{Label.SCOPE}={scope}"]})
            infos = [info_from_list(r) for r in rows]
            if any(rules.POOL in i.labels and rules.is_canonical(i.name) and (i.id, i.name) not in self._records for i in infos):
                self._records_now(scope)
            out = []
            for i in infos:
                if rules.POOL not in i.labels and i.labels.get(Label.MANAGED) != "true":
                    continue
                if (agent := self._as_agent(i)) is not None:
                    out.append(agent)
            return out

        return await self._call("list", listed)

    def open_event_stream(self, filters: dict[str, Any]) -> tuple[Iterator[dict[str, Any]], Callable[[], None]]:
        """Without the `managed` filter (labels AND): a claimed member has only the scope and pool labels."""
        wide = {**filters, "label": [f for f in filters.get("label", []) if not f.startswith(Label.MANAGED)]}
        return super().open_event_stream(wide)

    # ---- the pool --------------------------------------------------------------------------------------------

    async def create_member(self, spec: ContainerSpec) -> ContainerInfo:
        await self._create_started(spec)
        info = await super().get(spec.name)  # as it is: an idle member is no agent to our own `get`
        if info is None:
            raise DependencyUnavailable(f"pool member {spec.name} vanished right after start", dependency="docker")
        return info

    async def list_members(self, *, scope: str) -> list[tuple[ContainerInfo, dict[str, str] | None]]:
        """Members with their true record (the one naming the member's current name); stray records removed."""
        def listed() -> list[tuple[ContainerInfo, dict[str, str] | None]]:
            rows = self.client.api.containers(all=True, filters={"label": [f"{Label.SCOPE}={scope}", rules.POOL]})
            records = self._records_now(scope)
            infos = [info_from_list(r) for r in rows]
            names = {i.id: i.name for i in infos}
            for member_id, name in list(records):
                # Its member gone, or carrying another key's name (a record left by an older release that kept
                # one record per claimant): nobody will ever read it.
                current = names.get(member_id)
                if current is None or (rules.is_canonical(current) and current != name):
                    self._drop_record(member_id, name)
            out = []
            for i in infos:
                mine = [r for (m, n), r in records.items() if m == i.id and (n == i.name or not rules.is_canonical(i.name))]
                out.append((i, mine[0] if mine else None))
            return out

        return await self._call("list", listed)

    async def claim_member(self, member: ContainerInfo, *, name: str, labels: dict[str, str]) -> ContainerInfo:
        record = {**labels, rules.POOL_MEMBER: member.id, rules.POOL_NAME: name}
        # One nonce for every attempt: `_call` retries a transient failure (a timeout whose request still went
        # through), and a retry must recognise the record and the rename its first attempt made as its own.
        await self._call("claim", functools.partial(self._claim, member, name, record, secrets.token_hex(8)))
        self._last_exit.pop(name)  # a fresh agent for the key, as after a create (a restart notes its cause again)
        return member.model_copy(update={"name": name, "labels": rules.claimed_labels(member_labels=member.labels, record=record)})

    def _claim(self, member: ContainerInfo, name: str, record: dict[str, str], nonce: str) -> None:
        """Record first, then rename. A rename is no mutex: Docker resolves its source name before it locks the
        container, so a second rename can rename a member another process just claimed. The record is: the
        engine creates a volume name once and answers every later create with the first one's labels, so only
        the claimant that finds its own nonce there renames the member."""
        got = self.client.api.create_volume(name=rules.record_name(member.id), labels={**record, rules.POOL_CLAIM: nonce})
        if ((got or {}).get("Labels") or {}).get(rules.POOL_CLAIM) != nonce:
            raise MemberGone(member.id)  # another process holds this member
        self._records[(member.id, name)] = record
        try:
            self.client.api.rename(member.name, name)
        except NotFound:
            if self._serves(name, member.id):
                return  # an earlier attempt of this claim renamed it (its answer was lost)
            self._drop_record(member.id, name)
            raise MemberGone(member.id) from None
        except APIError as exc:
            self._drop_record(member.id, name)
            if exc.status_code == 409:
                raise NameTaken(name) from None
            raise

    def _serves(self, name: str, member_id: str) -> bool:
        try:
            return self.client.api.inspect_container(name)["Id"] == member_id
        except NotFound:
            return False

    def _drop_record(self, member_id: str, name: str) -> None:
        self._records.pop((member_id, name), None)
        try:
            self.client.api.remove_volume(rules.record_name(member_id), force=True)
        except NotFound:
            pass

    async def remove(self, name: str) -> None:
        """An agent (by name or id), and when it was a claimed member its claim record: a closed room leaves no
        volume behind."""
        await super().remove(name)

        def names_it(member: str, claimed_as: str) -> bool:
            return name in (member, claimed_as) or (len(name) >= 12 and member.startswith(name))

        def drop_records() -> None:
            if known := [k for k in self._records if names_it(*k)]:  # claimed here: no listing
                for member, claimed_as in known:
                    self._drop_record(member, claimed_as)
                return
            # Claimed by another process (or before a restart): its record by the key's name, or any by an id.
            wanted = f"{rules.POOL_NAME}={name}" if rules.is_canonical(name) else rules.POOL_MEMBER
            vols = self.client.api.volumes(filters={"label": [wanted]})
            for v in (vols or {}).get("Volumes") or []:
                labels = v.get("Labels") or {}
                member, claimed_as = labels.get(rules.POOL_MEMBER, ""), labels.get(rules.POOL_NAME, "")
                if names_it(member, claimed_as):
                    self._records.pop((member, claimed_as), None)
                    with contextlib.suppress(NotFound):
                        self.client.api.remove_volume(v["Name"], force=True)

        await self._call("remove", drop_records)

    async def hand_over(self, name: str, line: bytes, *, timeout_s: float) -> None:
        def write() -> None:
            try:
                sock = self.client.api.attach_socket(name, params={"stdin": 1, "stream": 1})
            except NotFound:
                raise DependencyUnavailable(f"member {name} is gone before its handover", dependency="docker") from None
            except (APIError, requests.exceptions.RequestException) as exc:  # not running (409), daemon trouble
                raise DependencyUnavailable(f"cannot attach to {name}: {type(exc).__name__}", dependency="docker") from None
            raw: socket.socket = getattr(sock, "_sock", sock)
            try:
                raw.settimeout(timeout_s)
                raw.sendall(line if line.endswith(b"\n") else line + b"\n")
            except OSError as exc:
                raise DependencyUnavailable(f"handover to {name} failed: {type(exc).__name__}", dependency="docker") from None
            finally:
                sock.close()

        await anyio.to_thread.run_sync(write, limiter=self._handover_limiter)

    async def remove_member(self, member: ContainerInfo) -> None:
        """By the name it was listed with: a member claimed since (renamed) is not found, and kept."""
        def remove() -> None:
            try:
                self.client.api.remove_container(member.name, force=True)
            except NotFound:
                return
            except APIError as exc:
                if exc.status_code != 409:  # 409: a removal already in progress
                    raise
            for m, n in [k for k in self._records if k[0] == member.id]:
                self._drop_record(m, n)

        await self._call("remove", remove)
