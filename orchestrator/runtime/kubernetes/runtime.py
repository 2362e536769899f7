"""The Kubernetes implementation of ContainerRuntime: one Pod per key (kubernetes_asyncio).

Why kubernetes_asyncio: it is the official OpenAPI-generated client (same models and config loaders
as `kubernetes`: kubeconfig and in-cluster) on aiohttp, so 50 concurrent triggers and a long watch
need no worker threads. Responses are read as raw JSON (`_preload_content=False`): turning 500 Pods
into generated model objects costs far more than the list itself, and the pure rules in kube_objects
work on the API's JSON shape.

The Pod name is the cross-process lock, as the container name is on Docker: `409 AlreadyExists` on
create means another trigger or process won (NameTaken). Deletions pass the Pod's uid as a
precondition, so acting on an observed id never deletes a newer Pod that took the same name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.client.rest import RESTResponse
from kubernetes_asyncio.config.config_exception import ConfigException

from orchestrator.core.errors import DependencyError, DependencyUnavailable, dependency_error
from orchestrator.core.models import ContainerInfo, ContainerStatus
from orchestrator.settings import Settings
from orchestrator.core.retry import Backoff, async_engine_retry
from orchestrator.runtime import ContainerSpec, NameTaken, WatchEvent
from orchestrator.runtime.kubernetes.objects import (
    info_from_pod,
    is_pod_name,
    is_pod_uid,
    pod_manifest,
    pod_name,
    secret_manifest,
    secret_name,
    selector,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_TRANSIENT_STATUS = {429, 500, 502, 503, 504}
_LOGS_TIMEOUT_S = 5.0  # logs are best effort (shown before a replace); a node that does not answer must not stall a trigger


class _Gone(Exception):
    """The watch's resourceVersion is older than the server keeps (410 Gone): relist."""


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError | ConnectionError):
        return True
    return isinstance(exc, ApiException) and exc.status in _TRANSIENT_STATUS


def namespace_for(settings: Settings) -> str:
    """`ORCH_KUBE_NAMESPACE` with `{scope}` filled in: one namespace per deployment scope by default."""
    return settings.kube_namespace.replace("{scope}", settings.scope)[:63].rstrip("-")


class KubernetesRuntime:
    """ContainerRuntime on one Kubernetes namespace."""

    engine = "kubernetes"

    def __init__(
        self,
        *,
        namespace: str,
        kubeconfig: Path | None = None,
        restricted: bool = True,
        pool_size: int = 32,
        timeout_s: float = 30.0,
        retries: int = 3,
        watch_timeout_s: int = 300,
        node_selector: dict[str, str] | None = None,
        tolerations: list[dict[str, Any]] | None = None,
    ) -> None:
        self.namespace = namespace
        self._placement = {"node_selector": dict(node_selector or {}), "tolerations": list(tolerations or [])}
        self._kubeconfig = kubeconfig
        self._restricted = restricted
        self._pool_size = pool_size
        self._timeout_s = timeout_s
        self._retries = retries
        self._watch_timeout_s = watch_timeout_s
        self._api: k8s.ApiClient | None = None
        self._core: k8s.CoreV1Api | None = None
        self._init_lock: asyncio.Lock | None = None
        self._where: dict[str, str] = {}  # pod uid -> pod name, from everything observed
        self.calls: dict[str, int] = {}  # API requests by operation, for benchmarks and tests
        self.watch_relists = 0  # relists done by watch(), after start, 410 Gone or a broken stream

    @classmethod
    def from_settings(cls, settings: Settings) -> "KubernetesRuntime":
        return cls(
            namespace=namespace_for(settings),
            kubeconfig=settings.kubeconfig.expanduser() if settings.kubeconfig else None,
            restricted=settings.kube_restricted,
            pool_size=settings.docker_pool_size, timeout_s=settings.kube_timeout_s, retries=settings.docker_retries,
            watch_timeout_s=settings.kube_watch_timeout_s,
            node_selector=settings.kube_node_selector, tolerations=[dict(t) for t in settings.kube_tolerations],
        )

    async def _client(self) -> k8s.CoreV1Api:
        """Built on first use inside the running loop (aiohttp sessions belong to one loop)."""
        if self._core is not None:
            return self._core
        if self._init_lock is None:
            self._init_lock = asyncio.Lock()
        async with self._init_lock:
            if self._core is None:
                cfg = k8s.Configuration()
                try:
                    if self._kubeconfig is not None:
                        await k8s_config.load_kube_config(config_file=str(self._kubeconfig), client_configuration=cfg)
                    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
                        k8s_config.load_incluster_config(client_configuration=cfg)
                    else:
                        await k8s_config.load_kube_config(client_configuration=cfg)
                except (ConfigException, OSError) as exc:
                    raise DependencyUnavailable(
                        f"no Kubernetes configuration ({exc}); set ORCH_KUBECONFIG or run in a pod with a ServiceAccount",
                        dependency="kubernetes",
                    ) from None
                cfg.connection_pool_maxsize = self._pool_size
                self._api = k8s.ApiClient(configuration=cfg)
                self._core = k8s.CoreV1Api(self._api)
        assert self._core is not None
        return self._core

    def close(self) -> None:
        api, self._api, self._core = self._api, None, None
        if api is None:
            return
        try:
            asyncio.get_running_loop().create_task(api.close())
        except RuntimeError:
            pass  # no loop left: its aiohttp session went with it

    async def aclose(self) -> None:
        api, self._api, self._core = self._api, None, None
        if api is not None:
            await api.close()

    async def _call(self, what: str, fn: Callable[[k8s.CoreV1Api], Awaitable[T]]) -> T:
        """One API request with retries on transient errors; the rest surface as ApiException."""
        core = await self._client()

        async def once() -> T:
            self.calls[what] = self.calls.get(what, 0) + 1
            try:
                return await fn(core)
            except ApiException as exc:
                if exc.status in (401, 403):
                    raise dependency_error(
                        "kubernetes",
                        f"Kubernetes refused {what} in namespace '{self.namespace}' ({exc.status}): {_message(exc)}; "
                        "check the orchestrator's credentials, its Role (deploy/kubernetes/rbac.yaml) and the namespace's admission rules",
                        status=exc.status,
                    ) from None
                raise

        try:
            return await async_engine_retry(attempts=self._retries, transient=_transient)(once)
        except Exception as exc:
            if not _transient(exc):
                raise
            status = getattr(exc, "status", None)
            raise dependency_error(
                "kubernetes", f"Kubernetes API failed {what}: {status or type(exc).__name__}", status=status
            ) from None

    async def _json(self, what: str, fn: Callable[[k8s.CoreV1Api], Awaitable[Any]]) -> dict[str, Any]:
        """A request read as raw JSON; non-2xx answers raise ApiException like the preloading client does."""

        async def once(core: k8s.CoreV1Api) -> dict[str, Any]:
            resp = await fn(core)
            try:
                data = await resp.read()
            finally:
                resp.release()
            if not 200 <= resp.status <= 299:
                raise ApiException(http_resp=RESTResponse(resp, data))
            return json.loads(data)

        return await self._call(what, once)

    def _remember(self, info: ContainerInfo) -> ContainerInfo:
        self._where[info.id] = info.name
        return info

    def _name(self, name_or_id: str) -> str | None:
        """The Pod name for a logical name, a Pod name or a Pod uid seen before (None: unknown uid)."""
        if is_pod_uid(name_or_id):
            return self._where.get(name_or_id)
        return name_or_id if is_pod_name(name_or_id) else pod_name(name_or_id)

    async def ping(self) -> None:
        try:
            await self._json("ping", lambda c: c.list_namespaced_pod(self.namespace, limit=1, _preload_content=False))
        except ApiException as exc:
            raise _api_error("ping", exc) from None

    async def get(self, name: str) -> ContainerInfo | None:
        pod = await self._get_pod(name)
        return self._remember(info_from_pod(pod)) if pod else None

    async def _get_pod(self, name_or_id: str) -> dict[str, Any] | None:
        name = self._name(name_or_id)
        if name is None:
            name = await self._find_uid(name_or_id)
            if name is None:
                return None
        try:
            pod = await self._json(
                "get", lambda c: c.read_namespaced_pod(name, self.namespace, _preload_content=False, _request_timeout=self._timeout_s)
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _api_error("get", exc) from None
        if is_pod_uid(name_or_id) and pod["metadata"].get("uid") != name_or_id:
            return None  # the name now belongs to a newer Pod: the one asked for is gone
        return pod

    async def _find_uid(self, uid: str) -> str | None:
        for pod in (await self._list_raw(None))[1]:
            if pod["metadata"].get("uid") == uid:
                return str(pod["metadata"]["name"])
        return None

    async def _list_raw(self, scope: str | None) -> tuple[str, list[dict[str, Any]]]:
        kwargs: dict[str, Any] = {"label_selector": selector(scope) if scope else "agent-orchestrator.managed=true"}
        try:
            body = await self._json(
                "list", lambda c: c.list_namespaced_pod(self.namespace, _preload_content=False, _request_timeout=self._timeout_s, **kwargs)
            )
        except ApiException as exc:
            raise _api_error("list", exc) from None
        return str(body["metadata"].get("resourceVersion", "")), list(body.get("items") or [])

    async def list_managed(self, *, scope: str) -> list[ContainerInfo]:
        """One list call, filtered by the API server on our managed+scope labels."""
        _, pods = await self._list_raw(scope)
        return [self._remember(info_from_pod(p)) for p in pods]

    async def create_and_start(self, spec: ContainerSpec) -> ContainerInfo:
        """Create the Pod (the kubelet starts it), then its Secret owned by it; no half-made Pod is left."""
        env_secret = secret_name(pod_name(spec.name), secrets.token_hex(4))
        manifest = pod_manifest(spec, namespace=self.namespace, secret=env_secret, restricted=self._restricted, **self._placement)
        try:
            pod = await self._json(
                "create", lambda c: c.create_namespaced_pod(self.namespace, manifest, _preload_content=False, _request_timeout=self._timeout_s)
            )
        except ApiException as exc:
            if exc.status == 409:
                raise NameTaken(spec.name) from None
            if exc.status == 404:
                raise dependency_error(
                    "kubernetes",
                    f"Kubernetes namespace '{self.namespace}' does not exist; create it (kubectl create namespace {self.namespace})",
                    status=exc.status, retry_after=60,
                ) from None
            if exc.status in (400, 403, 422):
                raise dependency_error(
                    "kubernetes", f"Kubernetes refused the agent pod: {_message(exc)}", status=exc.status, retry_after=60
                ) from None
            raise _api_error("create", exc) from None
        info = self._remember(info_from_pod(pod))
        secret = secret_manifest(spec, namespace=self.namespace, name=env_secret, owner_uid=info.id)
        if secret is not None:
            try:
                await self._call(
                    "create-secret", lambda c: c.create_namespaced_secret(self.namespace, secret, _request_timeout=self._timeout_s)
                )
            except BaseException as exc:
                await asyncio.shield(self.remove(info.id))  # no Pod left waiting for a Secret that never comes
                if isinstance(exc, ApiException):
                    raise dependency_error(
                        "kubernetes", f"Kubernetes refused the agent's secret: {_message(exc)}", status=exc.status
                    ) from None
                raise
        return info

    async def start(self, name: str) -> None:
        """Pods are started by their kubelet; nothing to do once the Pod exists."""

    async def stop(self, name: str, *, timeout_s: int) -> None:
        """A graceful delete (SIGTERM, then SIGKILL after timeout_s), waiting for it like `docker stop` does."""
        await self._delete(name, grace_s=timeout_s)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s + 5
        delay = 0.05
        while loop.time() < deadline and await self._get_pod(name) is not None:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def remove(self, name: str) -> None:
        """Delete now: grace period 0 in DeleteOptions (a query parameter alone is not enough)."""
        await self._delete(name, grace_s=0)

    async def _delete(self, name_or_id: str, *, grace_s: int) -> None:
        name = self._name(name_or_id)
        uid = name_or_id if is_pod_uid(name_or_id) else None
        if name is None:
            name = await self._find_uid(name_or_id)
            if name is None:
                return  # never seen and not listed: already gone
        body: dict[str, Any] = {"gracePeriodSeconds": grace_s, "propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            await self._call(
                "delete",
                lambda c: c.delete_namespaced_pod(
                    name, self.namespace, body=body, grace_period_seconds=grace_s, _request_timeout=self._timeout_s
                ),
            )
        except ApiException as exc:
            # 404: already gone; 409 on a uid precondition: the name now belongs to a newer Pod, ours is gone.
            if exc.status not in (404, 409):
                raise _api_error("delete", exc) from None

    async def logs_tail(self, name: str, *, lines: int = 20) -> str:
        pod = self._name(name) or await self._find_uid(name)
        if pod is None:
            return ""
        try:
            return str(await self._call(
                "logs", lambda c: c.read_namespaced_pod_log(pod, self.namespace, tail_lines=lines, _request_timeout=_LOGS_TIMEOUT_S)
            ))
        except (ApiException, DependencyError) as exc:
            # No container yet, or a node that serves no logs: nothing to show is not an error here.
            log.debug("no logs for pod %s: %s", pod, getattr(exc, "status", exc))
            return ""

    async def stats(self, name: str) -> dict[str, Any] | None:
        """Not supported: usage lives in metrics-server, which a cluster may not have."""
        return None

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


def _api_error(what: str, exc: ApiException) -> Exception:
    """An answer no caller handles, typed by the shared status rule (never a raw client exception to the API)."""
    return dependency_error("kubernetes", f"Kubernetes API refused {what} ({exc.status}): {_message(exc)}", status=exc.status)


def _message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (TypeError, ValueError):
        return str(exc.reason)
