"""Two error roots, as in kopf: temporary failures may be retried, permanent ones may not.

Every error carries an HTTP status and a message a user can act on; the API maps them
one-to-one, so no domain error ever surfaces as a 500. Messages never contain secrets.
"""

from __future__ import annotations

from typing import Any, Literal


class OrchestratorError(Exception):
    """Base of every error the orchestrator raises on purpose."""

    status_code: int = 500
    code: str = "internal"
    retryable: bool = False

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class PermanentError(OrchestratorError):
    """Retrying the same request will fail the same way."""


class TemporaryError(OrchestratorError):
    """A dependency is down or busy; the same request may succeed later."""

    retryable = True
    status_code = 503
    code = "unavailable"

    def __init__(self, message: str, *, retry_after: float = 5.0, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details)
        self.retry_after = retry_after


class InvalidInput(PermanentError):
    status_code = 422
    code = "invalid_input"


class Unauthorized(PermanentError):
    """No API key, or one that is not configured."""

    status_code = 401
    code = "unauthorized"


class Forbidden(PermanentError):
    """A valid key that may not do this (another client's agents, or an admin-only endpoint)."""

    status_code = 403
    code = "forbidden"


class NotFound(PermanentError):
    status_code = 404
    code = "not_found"


class Conflict(PermanentError):
    status_code = 409
    code = "conflict"


class LimitExceeded(TemporaryError):
    status_code = 429
    code = "limit_exceeded"


Dependency = Literal["docker", "kubernetes", "livekit", "tenants", "unknown"]


class DependencyError(OrchestratorError):
    """Raised by an adapter: `dependency` says which one failed, so no caller reads message text.

    An error re-raised `from` another dependency error (a cache that wraps its source's failure)
    inherits the dependency of its cause.
    """

    default_dependency: Dependency | None = None  # for an error class that only one dependency raises

    def __init__(self, message: str, *, dependency: Dependency | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self._dependency = dependency or self.default_dependency

    @property
    def dependency(self) -> Dependency:
        if self._dependency is not None:
            return self._dependency
        cause = self.__cause__
        return cause.dependency if isinstance(cause, DependencyError) else "unknown"


class DependencyUnavailable(DependencyError, TemporaryError):
    """Docker, Kubernetes, LiveKit or the tenant store cannot be reached right now (connection, timeout, 408/429/5xx)."""

    code = "dependency_unavailable"


class DependencyRejected(DependencyError, PermanentError):
    """The dependency answered and refused (a 4xx): retrying the same request fails the same way.

    The message carries the dependency's own explanation (a missing network, a bad memory value).
    """

    status_code = 502
    code = "dependency_rejected"


def dependency_error(
    dependency: Dependency, message: str, *, status: int | None, retry_after: float = 5.0, details: dict[str, Any] | None = None
) -> DependencyError:
    """The one status rule for every adapter: no status (connection), 408, 429 and 5xx are temporary; other 4xx permanent."""
    details = {**(details or {}), **({"upstream_status": status} if status is not None else {})}
    if status is None or status in (408, 429) or status >= 500:
        return DependencyUnavailable(message, dependency=dependency, retry_after=retry_after, details=details)
    return DependencyRejected(message, dependency=dependency, details=details)


class ConfigurationError(Exception):
    """A setting that cannot work, found at start-up; the message names the variable."""


class ContainerFailed(TemporaryError):
    """The agent container was created but did not reach a running state."""

    status_code = 502
    code = "container_failed"


class ImageNotAllowed(Forbidden):
    """The agent names an image outside this deployment's allowlist (ORCH_AGENT_IMAGE_ALLOWLIST)."""

    code = "image_not_allowed"
