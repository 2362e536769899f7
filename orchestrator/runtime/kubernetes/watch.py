"""Kubernetes' side of `ContainerRuntime.watch`: a relist, then the Pod watch, relisting after 410 Gone or a break.

A mixin of the runtime (it reads the runtime's list and its uid → name memory); nothing else uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.client.rest import RESTResponse

from orchestrator.core.errors import DependencyError
from orchestrator.core.models import ContainerInfo, ContainerStatus, WatchEvent
from orchestrator.core.retry import Backoff
from orchestrator.runtime.kubernetes.objects import info_from_pod, selector

log = logging.getLogger(__name__)


class _Gone(Exception):
    """The watch's resourceVersion is older than the server keeps (410 Gone): relist."""


class PodWatch:
    """`watch` and `follow_events` for the runtime, on the primitives it provides."""

    namespace: str
    calls: dict[str, int]
    watch_relists: int
    _where: dict[str, str]
    _timeout_s: float
    _watch_timeout_s: int

    if TYPE_CHECKING:  # provided by KubeAPI and the runtime
        async def _client(self) -> k8s.CoreV1Api: ...

        async def _list_raw(self, scope: str | None) -> tuple[str, list[dict[str, Any]]]: ...

        def _remember(self, info: ContainerInfo) -> ContainerInfo: ...

    async def watch(self, *, scope: str, resource_version: str | None = None) -> AsyncIterator[WatchEvent]:
        """Relist, then follow the Pod watch; relist again after 410 Gone or a broken stream.

        `resource_version` resumes from a known version instead of relisting first (a stale one
        gets 410 Gone from the server and so a relist).
        """
        rv = resource_version
        backoff = Backoff()
        while True:
            try:
                if rv is None:
                    rv, pods = await self._list_raw(scope)
                    self.watch_relists += 1
                    items = tuple(self._remember(info_from_pod(p)) for p in pods)
                    yield WatchEvent(kind="relist", items=items, resource_version=rv, seq=_seq(rv))
                    backoff.reset()
                async with contextlib.aclosing(self._watch_stream(scope, rv)) as stream:
                    async for kind, pod in stream:
                        rv = pod["metadata"].get("resourceVersion") or rv
                        if kind == "BOOKMARK":
                            continue
                        info = self._remember(info_from_pod(pod))
                        if kind == "DELETED":
                            self._where.pop(info.id, None)
                            yield WatchEvent(kind="delete", info=info, resource_version=rv, seq=_seq(rv))
                        else:
                            yield WatchEvent(kind="upsert", info=info, resource_version=rv, seq=_seq(rv))
                # The server closed the stream at its timeout: resume from rv, no relist needed.
            except _Gone:
                log.info("pod watch: resourceVersion %s expired (410 Gone); relisting", rv)
                rv = None
                yield WatchEvent(kind="broken")  # events may have been missed: distrust the view until the relist
            except (ApiException, DependencyError, aiohttp.ClientError, asyncio.TimeoutError, ConnectionError, ValueError) as exc:
                delay = backoff.next()
                log.warning("pod watch broke (%s); relisting in %.1f s", getattr(exc, "status", None) or type(exc).__name__, delay)
                rv = None
                yield WatchEvent(kind="broken")
                await asyncio.sleep(delay)

    async def _watch_stream(self, scope: str, rv: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        core = await self._client()
        self.calls["watch"] = self.calls.get("watch", 0) + 1
        resp = await core.list_namespaced_pod(
            self.namespace, label_selector=selector(scope), watch=True, resource_version=rv,
            allow_watch_bookmarks=True, timeout_seconds=self._watch_timeout_s, _preload_content=False,
            _request_timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._timeout_s, sock_read=self._watch_timeout_s + 30),
        )
        try:
            if resp.status == 410:
                raise _Gone()
            if resp.status != 200:
                raise ApiException(http_resp=RESTResponse(resp, await resp.read()))
            async for line in resp.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone()
                    raise ApiException(status=obj.get("code") or 500, reason=obj.get("message"))
                yield kind, obj
        finally:
            resp.release()

    def follow_events(self, *, scope: str, on_event: Callable[[str, str], None]) -> Callable[[], None]:
        """Report pod deaths (exited, crash-looping, deleted) from the watch; returns a stop function."""

        async def follow() -> None:
            first = True
            async for ev in self.watch(scope=scope):
                if ev.kind == "relist":
                    if not first:
                        on_event("reconnected", "")
                    first = False
                elif ev.kind == "broken":
                    continue
                elif ev.kind == "delete" and ev.info is not None:
                    on_event("die", ev.info.name)
                elif ev.info is not None and ev.info.status in (ContainerStatus.exited, ContainerStatus.dead, ContainerStatus.restarting):
                    on_event("die", ev.info.name)

        task = asyncio.get_running_loop().create_task(follow(), name=f"kube-events-{scope}")
        return task.cancel


def _seq(resource_version: str | None) -> int | None:
    """Kubernetes calls resourceVersions opaque; in practice they are etcd revisions, which order events."""
    return int(resource_version) if resource_version and resource_version.isdigit() else None
