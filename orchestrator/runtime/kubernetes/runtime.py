"""The Kubernetes implementation of ContainerRuntime: one Pod per key in the agents' own namespace (kubernetes_asyncio).

Why kubernetes_asyncio: it is the official OpenAPI-generated client (same models and config loaders
as `kubernetes`: kubeconfig and in-cluster) on aiohttp, so 50 concurrent triggers and a long watch
need no worker threads. The client and the one way to call it are in `api`, the watch in `watch`,
the pure manifests in `objects` and `policy`.

The Pod name is the cross-process lock, as the container name is on Docker: `409 AlreadyExists` on
create means another trigger or process won (NameTaken). Deletions pass the Pod's uid as a
precondition, so acting on an observed id never deletes a newer Pod that took the same name.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from orchestrator.core.errors import ConfigurationError, DependencyError, dependency_error
from orchestrator.core.models import ContainerInfo
from orchestrator.rules.isolation import parse_host_port
from orchestrator.settings import Settings
from orchestrator.runtime import ContainerSpec, NameTaken
from orchestrator.runtime.kubernetes.api import KubeAPI, api_error, message
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
from orchestrator.runtime.kubernetes.policy import agent_network_policy, same_policy
from orchestrator.runtime.kubernetes.watch import PodWatch

log = logging.getLogger(__name__)

_LOGS_TIMEOUT_S = 5.0  # logs are best effort (shown before a replace); a node that does not answer must not stall a trigger


def namespace_for(settings: Settings) -> str:
    """`ORCH_KUBE_NAMESPACE` with `{scope}` filled in: one namespace per deployment scope by default."""
    return settings.kube_namespace.replace("{scope}", settings.scope)[:63].rstrip("-")


class KubernetesRuntime(KubeAPI, PodWatch):
    """ContainerRuntime on one Kubernetes namespace."""

    engine = "kubernetes"
    starts_by_itself = True  # create answers with the pod Pending; its kubelet runs it

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
        runtime_class: str | None = None,
        network_policy: Callable[[list[str]], dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(namespace=namespace, kubeconfig=kubeconfig, pool_size=pool_size, timeout_s=timeout_s, retries=retries)
        self._placement = {"node_selector": dict(node_selector or {}), "tolerations": list(tolerations or [])}
        self._restricted = restricted
        self._watch_timeout_s = watch_timeout_s
        self._runtime_class = runtime_class
        # The agents' NetworkPolicy for the LiveKit URLs agents are given (None: no policy is managed).
        self._policy_for = network_policy
        self._network_policy = network_policy([]) if network_policy is not None else None
        self._where: dict[str, str] = {}  # pod uid -> pod name, from everything observed
        self.watch_relists = 0  # relists done by watch(), after start, 410 Gone or a broken stream

    @classmethod
    def from_settings(cls, settings: Settings) -> "KubernetesRuntime":
        def policy(urls: list[str]) -> dict[str, Any]:
            return agent_network_policy(
                namespace=namespace_for(settings), scope=settings.scope, public=settings.kube_agent_egress_public,
                destinations=settings.kube_agent_egress, livekit_urls=[settings.agent_livekit_url or "", *urls],
                rtc_ports=[parse_host_port(p) for p in settings.agent_host_ports],
            )

        return cls(
            namespace=namespace_for(settings),
            kubeconfig=settings.kubeconfig.expanduser() if settings.kubeconfig else None,
            restricted=settings.kube_restricted,
            pool_size=settings.docker_pool_size, timeout_s=settings.kube_timeout_s, retries=settings.docker_retries,
            watch_timeout_s=settings.kube_watch_timeout_s, runtime_class=settings.agent_runtime,
            network_policy=policy if settings.kube_network_policy else None,
            node_selector=settings.kube_node_selector, tolerations=[dict(t) for t in settings.kube_tolerations],
        )

    # ---- start-up ----------------------------------------------------------------------------

    async def preflight(self, *, network: str) -> None:
        """Refuse to start on what would fail every agent later: a missing agents' namespace or RuntimeClass.
        Then ensure the agents' NetworkPolicy (made, or put back as it should be). `network` means nothing here."""
        await self._check_runtime_class()
        if self._network_policy is not None:
            await self.ensure_network_policy(self._network_policy)

    async def allow_livekit(self, urls: list[str]) -> None:
        """The served clients' LiveKit URLs into the policy (runtime.LiveKitEgress): their addresses on LiveKit's ports."""
        if self._policy_for is not None:
            self._network_policy = self._policy_for(urls)
            await self.ensure_network_policy(self._network_policy)

    async def _check_runtime_class(self) -> None:
        name = self._runtime_class
        if not name:
            return
        try:
            await self._call("get-runtimeclass", lambda c: k8s.NodeV1Api(c.api_client).read_runtime_class(name, _request_timeout=self._timeout_s))
        except ApiException as exc:
            if exc.status == 404:
                raise ConfigurationError(
                    f"ORCH_AGENT_RUNTIME={name!r}: this cluster has no RuntimeClass {name!r} (kubectl get runtimeclass); "
                    "create one whose handler the nodes' container runtime knows, or unset ORCH_AGENT_RUNTIME"
                ) from None
            raise api_error("get runtimeclass", exc) from None
        except DependencyError as exc:
            if exc.details.get("upstream_status") != 403:
                raise
            # Cluster-scoped and read-only: a Role cannot grant it. Without it the first pod says so instead.
            log.warning("cannot check RuntimeClass %r (no get on runtimeclasses): %s", name, exc.message)

    async def ensure_network_policy(self, policy: dict[str, Any]) -> None:
        """Create the agents' NetworkPolicy, or replace it when someone changed it (idempotent)."""
        name = policy["metadata"]["name"]

        def net(c: k8s.CoreV1Api) -> k8s.NetworkingV1Api:
            return k8s.NetworkingV1Api(c.api_client)

        try:
            current = await self._json("get-networkpolicy", lambda c: net(c).read_namespaced_network_policy(
                name, self.namespace, _preload_content=False, _request_timeout=self._timeout_s))
        except ApiException as exc:
            if exc.status != 404:
                raise api_error("get networkpolicy", exc) from None
            current = None
        try:
            if current is None:
                await self._call("create-networkpolicy", lambda c: net(c).create_namespaced_network_policy(
                    self.namespace, policy, _request_timeout=self._timeout_s))
                log.info("created NetworkPolicy %s in namespace %s", name, self.namespace)
            elif not same_policy(current.get("spec"), policy["spec"]):
                body = {**policy, "metadata": {**policy["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]}}
                await self._call("replace-networkpolicy", lambda c: net(c).replace_namespaced_network_policy(
                    name, self.namespace, body, _request_timeout=self._timeout_s))
                log.warning("NetworkPolicy %s in %s differed from ours: replaced", name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise ConfigurationError(
                    f"ORCH_KUBE_NAMESPACE: the agents' namespace {self.namespace!r} does not exist; create it "
                    f"(kubectl create namespace {self.namespace}, or apply deploy/kubernetes)"
                ) from None
            if exc.status == 409:
                return  # another orchestrator made it meanwhile: the same policy
            raise api_error("ensure networkpolicy", exc) from None

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
            raise api_error("ping", exc) from None

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
            raise api_error("get", exc) from None
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
            raise api_error("list", exc) from None
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
                    "kubernetes", f"Kubernetes refused the agent pod: {message(exc)}", status=exc.status, retry_after=60
                ) from None
            raise api_error("create", exc) from None
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
                        "kubernetes", f"Kubernetes refused the agent's secret: {message(exc)}", status=exc.status
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
                raise api_error("delete", exc) from None

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
