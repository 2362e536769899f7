"""The Kubernetes API as the runtime uses it: one lazily built client, one way to call it (retries, our errors).

Responses are read as raw JSON (`_preload_content=False`): turning 500 Pods into generated model objects costs
far more than the list itself, and the pure rules (objects, policy) work on the API's JSON shape.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.client.rest import RESTResponse
from kubernetes_asyncio.config.config_exception import ConfigException

from orchestrator.core.errors import DependencyUnavailable, dependency_error
from orchestrator.core.retry import async_engine_retry

T = TypeVar("T")
_TRANSIENT_STATUS = {429, 500, 502, 503, 504}


def transient(exc: BaseException) -> bool:
    if isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError | ConnectionError):
        return True
    return isinstance(exc, ApiException) and exc.status in _TRANSIENT_STATUS


class KubeAPI:
    """A CoreV1 client built on first use (inside the running loop), with `_call`/`_json` for every request."""

    def __init__(
        self, *, namespace: str, kubeconfig: Path | None = None, pool_size: int = 32, timeout_s: float = 30.0,
        retries: int = 3,
    ) -> None:
        self.namespace = namespace
        self._kubeconfig = kubeconfig
        self._pool_size = pool_size
        self._timeout_s = timeout_s
        self._retries = retries
        self._api: k8s.ApiClient | None = None
        self._core: k8s.CoreV1Api | None = None
        self._init_lock: asyncio.Lock | None = None
        self.calls: dict[str, int] = {}  # API requests by operation, for benchmarks and tests

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
                        f"Kubernetes refused {what} in namespace '{self.namespace}' ({exc.status}): {message(exc)}; "
                        "check the orchestrator's credentials, its Role (deploy/kubernetes/rbac.yaml) and the namespace's admission rules",
                        status=exc.status,
                    ) from None
                raise

        try:
            return await async_engine_retry(attempts=self._retries, transient=transient)(once)
        except Exception as exc:
            if not transient(exc):
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


def api_error(what: str, exc: ApiException) -> Exception:
    """An answer no caller handles, typed by the shared status rule (never a raw client exception to the API)."""
    return dependency_error("kubernetes", f"Kubernetes API refused {what} ({exc.status}): {message(exc)}", status=exc.status)


def message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (TypeError, ValueError):
        return str(exc.reason)
