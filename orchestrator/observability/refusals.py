"""Every 4xx/5xx the orchestrator decides: one structured log line and one count, by a reason from a fixed set.

The reason is the error's code, made precise where one code covers several causes an operator acts on
differently (which limit, the swarm's capacity, the wrong-key throttle). Never the message: messages name
rooms and clients, and a label from them would grow without bound.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from orchestrator.observability.metrics import Metrics

log = logging.getLogger("orchestrator.refusals")

_LIMIT_RULES = ("max_agents_per_room", "max_agents_per_client", "max_agents_total")


def refusal_reason(code: str, details: Mapping[str, Any] | None = None) -> str:
    """The counter's `reason` label for an error code and its details (pure)."""
    details = details or {}
    rule = str(details.get("rule", ""))
    if code == "limit_exceeded":
        for name in _LIMIT_RULES:
            if f"({name})" in rule:
                return name
        if rule == "swarm capacity":
            return "no_capacity"
        if details.get("throttle"):
            return "wrong_key_throttle"
    if code in ("dependency_unavailable", "dependency_rejected") and details.get("dependency") in ("docker", "livekit", "tenants", "kubernetes", "swarm"):
        return f"{code}:{details['dependency']}"
    return code


class Refusals:
    """Logs and counts refusals; the API's error handlers and its request guard call it."""

    def __init__(self, metrics: Metrics | None) -> None:
        self._metrics = metrics

    def refused(self, *, status: int, code: str, message: str, method: str, path: str,
                details: Mapping[str, Any] | None = None, client_id: str | None = None) -> str:
        reason = refusal_reason(code, details)
        if self._metrics is not None:
            self._metrics.refusals.labels(reason=reason, status=str(status)).inc()
        level = logging.WARNING if status >= 500 or status == 429 else logging.INFO
        log.log(level, "refused %s %s with %d (%s): %s", method, path, status, reason, message,
                extra={"status": status, "reason": reason, "code": code, "method": method, "path": path,
                       "client_id": client_id or "-", **_safe(details)})
        return reason


def _safe(details: Mapping[str, Any] | None) -> dict[str, Any]:
    """The details worth a log field (the field at fault, the dependency, the rule); never a value the caller sent."""
    d = details or {}
    return {f"refusal_{k}": d[k] for k in ("field", "dependency", "rule", "reason") if k in d}
