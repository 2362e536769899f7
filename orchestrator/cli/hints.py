"""What the CLI says when the Docker engine, the cluster or the API does not answer: one plain line and a hint.

The raw text of a failed connection (urllib3's "HTTPConnectionPool(host=…): Max retries exceeded … Caused by
NewConnectionError(…)", requests' "('Connection aborted.', FileNotFoundError(2, …))") names the library, not
the problem. These pure functions turn it into the few causes an operator can act on, and say what to check.
"""

from __future__ import annotations

import os

# (needles in the raw text, the cause in plain words); the first match wins, so the specific come first.
_CAUSES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("FileNotFoundError", "No such file or directory"), "no such socket"),
    (("PermissionError", "Permission denied"), "permission denied"),
    (("Name or service not known", "Temporary failure in name resolution", "nodename nor servname", "getaddrinfo"),
     "host name not resolved"),
    (("Connection refused", "Errno 111", "ConnectError", "ConnectionRefused"), "connection refused"),
    (("timed out", "Timeout", "TimeoutError"), "timed out"),
    (("Connection reset", "RemoteDisconnected", "Connection aborted", "RemoteProtocolError"), "connection dropped"),
)


def cause(raw: str) -> str:
    """The plain cause behind a client library's connection error text ("connection refused", "timed out" …)."""
    for needles, plain in _CAUSES:
        if any(n in raw for n in needles):
            return plain
    return "no answer"


def docker_host() -> str:
    """The engine the CLI talks to, as the settings pick it (ORCH_DOCKER_HOST, else DOCKER_HOST, else the socket)."""
    return os.environ.get("ORCH_DOCKER_HOST") or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def engine_down(dependency: str, raw: str) -> str:
    """One line for an engine that did not answer, with what to check. `dependency` as DependencyError names it."""
    why = cause(raw)
    if dependency == "kubernetes":
        where = os.environ.get("ORCH_KUBECONFIG") or os.environ.get("KUBECONFIG") or "in-cluster, else ~/.kube/config"
        return (f"the Kubernetes API is not reachable ({why}); check the cluster with `kubectl get --raw /healthz` "
                f"and ORCH_KUBECONFIG (now: {where})")
    host = docker_host()
    hint = "add this user to the docker group, or run as root" if why == "permission denied" else \
        "is the Docker engine running? (`docker info`)"
    return f"the Docker engine at {host} is not reachable ({why}): {hint}; ORCH_DOCKER_HOST or DOCKER_HOST name another engine"


def api_down(url: str, raw: str) -> str:
    """One line for an orchestrator API that did not answer."""
    return (f"the orchestrator API at {url} is not reachable ({cause(raw)}): is `orchestrator serve` running there? "
            "ORCH_URL or --url name another one")
