"""Warm pool members on Kubernetes: Pods made ahead, claimed by a label patch with a resourceVersion precondition,
handed their assignment over the API server's pods/attach.

Claim: one merge patch carrying the member's resourceVersion (members.claim_patch). Two claimants of one member:
the API server applies the first, the second gets 409 Conflict → MemberGone. A Pod name cannot change, so no
name can be the key's lock as on Docker: after its patch a claimant lists the Pods serving its key (members
claimed for it, and the Pod a cold start made: a cold Pod carries the same `pool-key` label, its own name, so one
list by that label finds both); any other one there and it deletes its member (it was handed nothing yet) and
raises NameTaken. A cold create does the same check after it. Each side writes, then reads a snapshot at
its own write's resourceVersion or later: if A's read misses B's write, B wrote after A's snapshot, so B's read
(at or after its write) includes A's. Of two racers at least one sees the other and backs off: never two agents
for one key (both may back off: the trigger's NameTaken retry then starts it again).

Identity: every reader (get, list_managed, the watch) reports a claimed member under the Pod name its key's cold
Pod would have (its `pool-key` label) with its key's labels; that name is mapped to the member's own Pod name
here (learnt from any read, or looked up by the `pool-key` label), so the reconciler, `ps`, a restarted
orchestrator and a second process find it by key from the API server alone. Idle members carry no `managed`
label: they are never agents. Handover: the line goes to the member's stdin over a websocket to
pods/attach (what `kubectl attach -i` does), so only a holder of that API right can write it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.stream import WsApiClient

from orchestrator.core.errors import DependencyUnavailable
from orchestrator.core.models import ContainerInfo, ContainerStatus
from orchestrator.rules import pool as rules
from orchestrator.runtime import ContainerSpec, MemberGone, NameTaken
from orchestrator.runtime.kubernetes import members as m
from orchestrator.runtime.kubernetes.api import api_error
from orchestrator.runtime.kubernetes.objects import CONTAINER_NAME, info_from_pod, is_pod_uid
from orchestrator.runtime.kubernetes.runtime import KubernetesRuntime
from orchestrator.settings import Settings

MEMBER_START_TIMEOUT_S = 120.0  # a member Pod not running by then (image pull, no room on a node) is given up
_CLAIM_ATTEMPTS = 3  # re-reads after a 409 whose cause was a status update (the member still idle), not a claim


class PooledKubernetesRuntime(KubernetesRuntime):
    """KubernetesRuntime that also keeps warm pool members (runtime.WarmPoolEngine)."""

    # stdin only: a lobby member's token would sit in its Pod's env, which anyone who may read Pods can read.
    handovers = (rules.WARM_PROTOCOL,)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._alias: dict[str, str] = {}  # a key's Pod name -> the claimed member Pod serving it
        self._rv: dict[str, str] = {}  # member uid -> the resourceVersion last read (the claim's precondition)
        self._ws: WsApiClient | None = None
        # Images trusted to wait warm (the API server cannot read image labels): from_settings names the
        # deployment's agent image only, so an agent with an image of its own starts cold. None: every image.
        self.warm_images: frozenset[str] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> "PooledKubernetesRuntime":
        runtime = super().from_settings(settings)
        assert isinstance(runtime, PooledKubernetesRuntime)
        runtime.warm_images = frozenset({settings.agent_image})
        return runtime

    # ---- readers: a claimed member is its key's container -------------------------------------------------

    def _remember(self, info: ContainerInfo) -> ContainerInfo:
        if not m.is_claimed(info.labels):
            return super()._remember(info)
        self._alias[info.labels[m.POOL_KEY]] = info.name
        self._where[info.id] = info.name  # by uid: its own Pod (the key's Pod name may hold a cold Pod one day)
        return m.as_key_container(info)

    def _name(self, name_or_id: str) -> str | None:
        """A uid names one Pod for ever; a name of a key's Pod maps to the member claimed for it, when there is one."""
        name = super()._name(name_or_id)
        if name is None or is_pod_uid(name_or_id):
            return name
        return self._alias.get(name, name)

    async def _get_pod(self, name_or_id: str) -> dict[str, Any] | None:
        pod = await super()._get_pod(name_or_id)
        if pod is not None or is_pod_uid(name_or_id):
            return pod
        key_pod = super()._name(name_or_id) or ""
        if self._alias.pop(key_pod, None) is not None:  # that member is gone; a cold Pod may hold the key now
            if (pod := await super()._get_pod(key_pod)) is not None:
                return pod
        return await self._claimed_pod(key_pod)

    async def _claimed_pod(self, key_pod: str) -> dict[str, Any] | None:
        """The member claimed for a key unknown to this process yet (a restart, another process's claim)."""
        found = [p for p in await self._list_by(m.key_selector(key_pod)) if not p["metadata"].get("deletionTimestamp")]
        if not found:
            return None
        self._alias[key_pod] = found[0]["metadata"]["name"]
        return found[0]

    async def _learn_alias(self, name_or_id: str) -> None:
        if not is_pod_uid(name_or_id) and (key_pod := super()._name(name_or_id)) and key_pod not in self._alias:
            await self._claimed_pod(key_pod)

    async def _delete(self, name_or_id: str, *, grace_s: int) -> None:
        await self._learn_alias(name_or_id)
        await super()._delete(name_or_id, grace_s=grace_s)

    async def logs_tail(self, name: str, *, lines: int = 20) -> str:
        await self._learn_alias(name)
        return await super().logs_tail(name, lines=lines)

    async def _list_by(self, label_selector: str, *, not_older_than: str | None = None) -> list[dict[str, Any]]:
        at = {"resource_version": not_older_than, "resource_version_match": "NotOlderThan"} if not_older_than else {}
        try:
            body = await self._json("list", lambda c: c.list_namespaced_pod(
                self.namespace, label_selector=label_selector, _preload_content=False, _request_timeout=self._timeout_s,
                **at))
        except ApiException as exc:
            raise api_error("list", exc) from None
        return list(body.get("items") or [])

    async def _read(self, pod: str) -> dict[str, Any] | None:
        try:
            return await self._json("get", lambda c: c.read_namespaced_pod(
                pod, self.namespace, _preload_content=False, _request_timeout=self._timeout_s))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise api_error("get", exc) from None

    async def _rivals(self, key_pod: str, *, mine: str, written_at: str | None = None) -> list[str]:
        """One list: members claimed for the key and its cold Pod carry the same `pool-key` label. (A cold Pod made by
        a version before that label is not seen here; the reconciler's duplicate rule removes one of such a pair.)

        `written_at`: the resourceVersion of our own write. The list then comes from the API server's watch cache at
        that version or later (resourceVersionMatch=NotOlderThan: ~3 ms here, against ~18 ms for a quorum read of
        the namespace): enough for the write-then-read argument (module docstring), which needs each side's read to
        include its own write, not the newest state."""
        return m.rivals(mine=mine, pods=await self._list_by(m.key_selector(key_pod), not_older_than=written_at))

    async def create_and_start(self, spec: ContainerSpec) -> ContainerInfo:
        """A cold start, then the key check a claim also does (module docstring): a member another process claimed
        for this key meanwhile makes this Pod go again (NameTaken), so one of two racers always backs off."""
        info = await super().create_and_start(m.keyed(spec))
        if await self._rivals(info.name, mine=info.id):
            await asyncio.shield(self.remove(info.id))
            raise NameTaken(spec.name)
        return info

    # ---- the pool --------------------------------------------------------------------------------------------

    async def image_id(self, image: str) -> tuple[str, dict[str, str]] | None:
        """The API server knows no images: the reference is the id (drift = a new reference; pin digests to recycle
        on a moved tag) and the deployment's agent image is trusted to speak the warm protocol (ours does)."""
        trusted = self.warm_images is None or image in self.warm_images
        return image, {rules.WARM_MODE: rules.WARM_PROTOCOL} if trusted else {}

    async def create_member(self, spec: ContainerSpec) -> ContainerInfo:
        """Create the member's Pod and return once its container runs (stdin written before could be lost)."""
        try:
            manifest = m.member_manifest(spec, namespace=self.namespace, restricted=self._restricted, **self._placement)
        except ValueError as exc:
            raise DependencyUnavailable(str(exc), dependency="pool") from None
        try:
            pod = await self._json("create", lambda c: c.create_namespaced_pod(
                self.namespace, manifest, _preload_content=False, _request_timeout=self._timeout_s))
        except ApiException as exc:
            raise api_error("create pool member", exc) from None
        name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
        loop = asyncio.get_running_loop()
        deadline, delay = loop.time() + MEMBER_START_TIMEOUT_S, 0.05
        while True:
            info = info_from_pod(pod)
            self._rv[uid] = pod["metadata"]["resourceVersion"]
            if info.status is ContainerStatus.running:
                return info
            if info.status is not ContainerStatus.created or loop.time() > deadline:
                self._where[uid] = name
                await asyncio.shield(self._delete(uid, grace_s=0))
                raise DependencyUnavailable(
                    f"pool member {name} did not start: {info.status.value} ({info.reason or 'timed out'})", dependency="kubernetes")
            await asyncio.sleep(delay)  # polling the Pod's phase, backing off to 1 s
            delay = min(delay * 2, 1.0)
            if (pod := await self._read(name)) is None or pod["metadata"]["uid"] != uid:
                raise DependencyUnavailable(f"pool member {name} vanished while starting", dependency="kubernetes")

    async def list_members(self, *, scope: str) -> list[tuple[ContainerInfo, dict[str, str] | None]]:
        out = []
        for pod in await self._list_by(m.member_selector(scope)):
            info = info_from_pod(pod)
            self._rv[info.id] = pod["metadata"]["resourceVersion"]
            out.append(m.as_member(info))
        return out

    async def claim_member(self, member: ContainerInfo, *, name: str, labels: dict[str, str]) -> ContainerInfo:
        """The claim patch with the member's resourceVersion; then the key check (NameTaken: member deleted)."""
        pod_name = member.name  # an idle member is listed by its own Pod name
        rv = self._rv.get(member.id)
        pod: dict[str, Any] | None = None
        for _ in range(_CLAIM_ATTEMPTS):
            if rv is None:
                current = await self._read(pod_name)
                if current is not None and current["metadata"]["uid"] == member.id and m.claimed_for(current, name):
                    pod = current  # our patch went through, its answer did not (a retry met our own write)
                    break
                if current is None or current["metadata"]["uid"] != member.id or not m.is_idle(current) \
                        or info_from_pod(current).status is not ContainerStatus.running:
                    raise MemberGone(member.id)  # claimed by another process, dying, or gone
                rv = current["metadata"]["resourceVersion"]
            body = m.claim_patch(name=name, labels=labels, resource_version=rv)
            try:
                pod = await self._json("claim", lambda c, body=body: c.patch_namespaced_pod(
                    pod_name, self.namespace, body, _content_type=m.MERGE_PATCH, _preload_content=False,
                    _request_timeout=self._timeout_s))
                break
            except ApiException as exc:
                if exc.status == 404:
                    raise MemberGone(member.id) from None
                if exc.status != 409:
                    raise api_error("claim pool member", exc) from None
                rv = None  # changed since read: by a claim (re-read says so) or by a status update (claim again)
        if pod is None:
            raise MemberGone(member.id)
        self._rv.pop(member.id, None)
        info = info_from_pod(pod)
        key_pod = info.labels[m.POOL_KEY]
        if await self._rivals(key_pod, mine=member.id, written_at=pod["metadata"].get("resourceVersion")):
            self._where[member.id] = pod_name
            await asyncio.shield(self._delete(member.id, grace_s=0))  # handed nothing yet: nothing is lost
            raise NameTaken(name)
        return self._remember(info)

    async def hand_over(self, name: str, line: bytes, *, timeout_s: float) -> None:
        """The line to the member's stdin through pods/attach (a websocket to the API server, as `kubectl attach -i`)."""
        await self._learn_alias(name)
        pod = self._name(name) or name
        try:
            async with asyncio.timeout(timeout_s):
                api = k8s.CoreV1Api(await self._ws_client())
                self.calls["attach"] = self.calls.get("attach", 0) + 1
                connect = await api.connect_get_namespaced_pod_attach(
                    pod, self.namespace, container=CONTAINER_NAME, stdin=True, stdout=False, stderr=False, tty=False,
                    _preload_content=False)
                async with connect as ws:
                    await ws.send_bytes(m.stdin_frame(line))
        except (aiohttp.ClientError, ApiException, OSError, TimeoutError) as exc:
            why = getattr(exc, "status", None) or type(exc).__name__
            raise DependencyUnavailable(f"handover to pod {pod} failed: {why}", dependency="kubernetes") from None

    async def _ws_client(self) -> WsApiClient:
        if self._ws is None:
            await self._client()
            assert self._api is not None
            self._ws = WsApiClient(configuration=self._api.configuration)
        return self._ws

    async def remove_member(self, member: ContainerInfo) -> None:
        """An idle member only while still idle (resourceVersion precondition: one claimed since is kept); a claimed
        one (a failed handover: its key goes cold) only while it still serves the key it was claimed for."""
        if m.is_claimed(member.labels) or rules.is_canonical(member.name):
            await self._delete(member.id, grace_s=0)
            return
        for _ in range(_CLAIM_ATTEMPTS):
            pod = await self._read(member.name)
            if pod is None or pod["metadata"]["uid"] != member.id or not m.is_idle(pod):
                return
            body = {"gracePeriodSeconds": 0, "preconditions": {"uid": member.id, "resourceVersion": pod["metadata"]["resourceVersion"]}}
            try:
                await self._call("delete", lambda c, body=body: c.delete_namespaced_pod(
                    member.name, self.namespace, body=body, grace_period_seconds=0, _request_timeout=self._timeout_s))
                self._rv.pop(member.id, None)
                return
            except ApiException as exc:
                if exc.status == 404:
                    return
                if exc.status != 409:
                    raise api_error("delete pool member", exc) from None

    def close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                asyncio.get_running_loop().create_task(ws.close())
            except RuntimeError:
                pass
        super().close()

    async def aclose(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()
        await super().aclose()
