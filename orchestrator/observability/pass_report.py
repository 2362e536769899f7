"""What one reconcile pass saw and did: the cron mode's JSON summary, the admin endpoint's answer, the
input of telemetry. Plain data, so telemetry and the API never need the reconciler itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from orchestrator.rules.planner import Action


def log_fields(action: Action) -> dict[str, Any]:
    """An action as log context: `name` is reserved by LogRecord (logging raises KeyError), so it becomes `container`."""
    fields = action.to_dict()
    if "name" in fields:
        fields["container"] = fields.pop("name")
    fields.pop("key", None)  # client/agent/room are already there or in `container`; no nested dicts in log lines
    return fields


@dataclass
class ActionResult:
    action: Action
    ok: bool
    error: str | None = None
    dependency: str | None = None  # which dependency failed it (from the adapter's typed error)
    skipped: str | None = None  # not applied, and why (a trigger came in after the observation)

    def to_dict(self) -> dict[str, Any]:
        extra = {**({"error": self.error} if self.error else {}), **({"skipped": self.skipped} if self.skipped else {})}
        return {**self.action.to_dict(), "ok": self.ok, **extra}


@dataclass
class PassReport:
    """What one pass saw and did; the JSON summary of cron mode and of the admin endpoint."""

    started_at: datetime
    dry_run: bool
    duration_s: float = 0.0
    containers: int = 0
    rooms: int = 0
    warnings: list[str] = field(default_factory=list)
    unobservable: list[str] = field(default_factory=list)  # the dependency behind each warning, in order
    results: list[ActionResult] = field(default_factory=list)
    observe_error: str | None = None

    @property
    def failed(self) -> int:
        return sum(not r.ok for r in self.results)

    @property
    def exit_code(self) -> int:
        """0 ok; 1 some action failed or part of LiveKit/tenants was not observable; 2 Docker not observable."""
        if self.observe_error:
            return 2
        return 1 if self.failed or self.warnings else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at.isoformat(),
            "dry_run": self.dry_run,
            "duration_s": round(self.duration_s, 3),
            "observed": {"containers": self.containers, "rooms": self.rooms},
            "actions": [r.to_dict() for r in self.results],
            "failed": self.failed,
            "warnings": self.warnings,
            "observe_error": self.observe_error,
            "exit_code": self.exit_code,
        }
