"""Warm pool members on a swarm: replicas-1 services made by the cold launch path, claimed by a label update.

A member is a cold agent's service with every tenant field taken out (same launch path: hardening, overlay,
placement constraints, the lobby token as a Docker secret), no `managed` label, and nothing but its lobby room
and LiveKit URL in its spec. The orchestrator reaches only a manager, so the assignment goes through LiveKit
(services.pool_lobby, `handovers = (livekit-lobby-v1,)`); this runtime only makes, claims, lists and removes.

A claim is two atomic manager steps:
1. the member's service-level labels become the key's (managed, client, agent, room...) plus the key's service
   name (`pool-name`), by an update carrying the version read just before: swarm refuses an update out of
   sequence, so of claimants racing for one member exactly one wins. Service labels change without replacing
   the task: the waiting process keeps running.
2. an alias: a service of zero replicas under the key's own service name (rules.service_name), labelled with the
   member's id. Service names are unique, so the alias is the key's lock exactly as a cold service's name is: a
   cold create for the key answers NameTaken, and a claim for a key already served does (its member is removed).
Every reader (get, list_managed, the watch, stop, remove) follows an alias to its member and reports a claimed
member under the key's service name, so the reconciler, `docker service ls | grep agent_`, a restarted
orchestrator and a second process find the agent by its key from the manager alone.
A claimer killed between the steps leaves a keyed member without alias: `list_members` removes it after the
reservation timeout (no assignment was ever sent to it: the handover comes after the alias).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from docker.errors import APIError, NotFound

from orchestrator.core.clock import utcnow
from orchestrator.core.errors import DependencyUnavailable
from orchestrator.core.models import ContainerInfo
from orchestrator.rules import pool as rules
from orchestrator.rules.naming import LABEL_PREFIX, Label
from orchestrator.runtime import ContainerSpec, MemberGone, NameTaken
from orchestrator.runtime.swarm.launch import _name_conflict
from orchestrator.runtime.swarm.rules import service_name
from orchestrator.runtime.swarm.runtime import SwarmRuntime

log = logging.getLogger(__name__)
ALIAS = LABEL_PREFIX + "pool-alias-of"  # on an alias service: the id of the member service it names
STRAY_AFTER_S = 30.0  # a claimed member with no alias this old was left by a claimer that died between the steps


def _labels(svc: dict[str, Any]) -> dict[str, str]:
    return (svc.get("Spec") or {}).get("Labels") or {}


def _claimed(labels: dict[str, str]) -> bool:
    return rules.POOL in labels and labels.get(Label.MANAGED) == "true"


class PooledSwarmRuntime(SwarmRuntime):
    """SwarmRuntime that also keeps warm pool members (runtime.WarmPoolEngine)."""

    handovers = (rules.LOBBY_PROTOCOL,)  # no attach into a task on another node: the lobby only

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # member id -> its service as last listed (version + spec): a claim updates from it without a read first.
        # Only a claim changes a member's spec, so a stale one fails "out of sequence" and is re-read once.
        self._known: dict[str, dict[str, Any]] = {}

    # ---- readers: an alias is its member; a claimed member is its key's container ----------------------------

    def _inspect(self, ref: str) -> dict[str, Any] | None:
        svc = super()._inspect(ref)
        if svc is None or ALIAS not in _labels(svc):
            return svc
        try:
            self._count("inspect")
            return self.client.api.inspect_service(_labels(svc)[ALIAS])
        except NotFound:
            self._remove_service(svc["ID"])  # its member is gone: the key's name is free again
            return None

    def _info(self, svc: Any, tasks: list[Any]) -> ContainerInfo:
        info = super()._info(svc, tasks)
        if _claimed(info.labels) and rules.POOL_NAME in info.labels:
            return info.model_copy(update={"name": info.labels[rules.POOL_NAME]})
        return info

    def _list(self, scope: str) -> list[ContainerInfo]:
        """As SwarmRuntime's, but tasks by scope only: a claimed member's task carries its idle container labels."""
        services = self._services({"label": [f"{Label.MANAGED}=true", f"{Label.SCOPE}={scope}"]})
        by_service: dict[str, list[dict[str, Any]]] = {}
        for t in self._tasks({"label": [f"{Label.SCOPE}={scope}"]}):
            by_service.setdefault(t["ServiceID"], []).append(t)
        return [self._info(s, by_service.get(s["ID"], [])) for s in services]

    def _remove_service(self, service_id: str) -> None:
        try:
            self._count("remove")
            self.client.api.remove_service(service_id)
        except NotFound:
            pass

    async def remove(self, name: str) -> None:
        """A member: its service, its secrets, then its alias (the key's name is freed last)."""

        def remove() -> None:
            svc = self._inspect(name)
            if svc is None:
                return
            self._remove_service(svc["ID"])
            self._remove_secrets(svc["Spec"]["Name"])
            self._remove_alias(svc)

        await self._call("service remove", remove)

    def _remove_alias(self, member: dict[str, Any]) -> None:
        alias = _labels(member).get(rules.POOL_NAME)
        if not alias or rules.POOL not in _labels(member):
            return
        try:
            found = self.client.api.inspect_service(alias)
        except NotFound:
            return
        if _labels(found).get(ALIAS) == member["ID"]:
            self._remove_service(found["ID"])

    # ---- the pool --------------------------------------------------------------------------------------------

    async def create_member(self, spec: ContainerSpec) -> ContainerInfo:
        """The cold launch path as it is: a member is hardened, networked and placed exactly like an agent."""
        info = await self.create_and_start(spec)
        svc = await self._call("service inspect", functools.partial(self.client.api.inspect_service, info.id))
        self._known[info.id] = svc
        return info

    async def list_members(self, *, scope: str) -> list[tuple[ContainerInfo, dict[str, str] | None]]:
        """Members with their claim (the key's labels, as a record) when claimed; strays of dead claimers removed."""
        def listed() -> list[tuple[ContainerInfo, dict[str, str] | None]]:
            services = self._services({"label": [f"{Label.SCOPE}={scope}", rules.POOL]})
            aliases = {_labels(a).get(ALIAS) for a in self._services({"label": [f"{Label.SCOPE}={scope}", ALIAS]})}
            by_service: dict[str, list[dict[str, Any]]] = {}
            for t in self._tasks({"label": [f"{Label.SCOPE}={scope}", rules.POOL]}):
                by_service.setdefault(t["ServiceID"], []).append(t)
            out: list[tuple[ContainerInfo, dict[str, str] | None]] = []
            now = utcnow()
            self._known = {svc["ID"]: svc for svc in services if not _claimed(_labels(svc))}
            for svc in services:
                info = self._info(svc, by_service.get(svc["ID"], []))
                if not _claimed(info.labels):
                    out.append((info, None))
                elif svc["ID"] in aliases or rules.stamp_age(info.labels.get(Label.CREATED_AT), now) < STRAY_AFTER_S:
                    out.append((info, dict(info.labels)))
                else:
                    log.warning("pool: removing %s, claimed for %s by a claimer that never made its alias", svc["Spec"]["Name"], info.name)
                    self._remove_service(svc["ID"])
                    self._remove_secrets(svc["Spec"]["Name"])
            return out

        return await self._call("service list", listed)

    async def claim_member(self, member: ContainerInfo, *, name: str, labels: dict[str, str]) -> ContainerInfo:
        claimed = await self._call("claim", functools.partial(self._claim, member.id, service_name(name), labels))
        return member.model_copy(update={"name": service_name(name), "labels": claimed})

    def _claim(self, member_id: str, alias: str, labels: dict[str, str]) -> dict[str, str]:
        cached = self._known.pop(member_id, None)
        svc, claimed = self._take(member_id, alias, labels, cached)
        if svc is None:  # the listed version was stale: read it once, then the same precondition decides
            svc, claimed = self._take(member_id, alias, labels, None)
        if svc is None:
            raise MemberGone(member_id)  # another claimant's update came first
        api = self.client.api
        image = svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
        try:
            self._count("create")
            api.create_service(
                {"ContainerSpec": {"Image": image}}, name=alias, mode={"Replicated": {"Replicas": 0}},
                labels={Label.SCOPE: claimed.get(Label.SCOPE, ""), ALIAS: svc["ID"]},
            )
        except APIError as exc:
            self._remove_service(svc["ID"])  # claimed but never handed anything: removing it is safe
            self._remove_secrets(svc["Spec"]["Name"])
            if _name_conflict(exc):
                raise NameTaken(alias) from None
            raise
        return claimed

    def _take(
        self, member_id: str, alias: str, labels: dict[str, str], svc: dict[str, Any] | None,
    ) -> tuple[dict[str, Any] | None, dict[str, str]]:
        """The member's labels made the key's with the version `svc` carries as the precondition: (svc, labels), or
        (None, {}) when the update came out of sequence. MemberGone when it is gone or claimed already."""
        if svc is None:
            try:
                self._count("inspect")
                svc = self.client.api.inspect_service(member_id)
            except NotFound:
                raise MemberGone(member_id) from None
        current = _labels(svc)
        if rules.POOL not in current or _claimed(current):
            raise MemberGone(member_id)  # claimed by another process since it was listed
        claimed = {**current, **labels, Label.MANAGED: "true", rules.POOL_NAME: alias}
        api = self.client.api
        try:  # the raw update (the SDK's would re-read the spec): the version read before is the precondition
            self._count("update")
            api._result(api._post_json(
                api._url("/services/{0}/update", svc["ID"]), data={**svc["Spec"], "Labels": claimed},
                params={"version": svc["Version"]["Index"]},
            ), json=True)
        except NotFound:
            raise MemberGone(member_id) from None
        except APIError as exc:
            if "out of sequence" in str(exc.explanation or exc):
                return None, {}
            raise
        return svc, claimed

    async def hand_over(self, name: str, line: bytes, *, timeout_s: float) -> None:
        raise DependencyUnavailable("swarm members take their assignment through their LiveKit lobby (services.pool_lobby)")

    async def remove_member(self, member: ContainerInfo) -> None:
        """The member, unless another process claimed it since it was listed idle (then it is that process's agent)."""
        def remove() -> None:
            try:
                svc = self.client.api.inspect_service(member.id)
            except NotFound:
                return
            if _claimed(_labels(svc)) and not _claimed(member.labels):
                return
            self._remove_service(svc["ID"])
            self._remove_secrets(svc["Spec"]["Name"])
            self._remove_alias(svc)

        await self._call("remove", remove)
