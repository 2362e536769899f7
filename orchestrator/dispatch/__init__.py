"""LiveKit's worker protocol: the orchestrator registers as an agent worker and every job LiveKit
dispatches becomes a trigger key, run in its own per-tenant container.

rules.py is pure (registrations, room owner, room patterns, load); worker.py is the one adapter that
speaks the protocol; service.py joins them to the trigger's reuse-or-launch.
"""

from orchestrator.dispatch.service import DispatchService

__all__ = ["DispatchService"]
