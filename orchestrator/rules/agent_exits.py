"""What an agent's exit code means (pure): the agent image's contract (agent_image.lifecycle.Exit) in words an
operator can act on, shown by `ps`, the rooms API and the feed instead of a bare number."""

from __future__ import annotations

# agent_image.lifecycle.Exit, restated: the agent image stands alone and the orchestrator never imports it.
EXIT_REASONS = {
    1: "the agent crashed (its logs: `orchestrator logs <room>`)",
    2: "the agent's configuration was refused (its logs name the variable)",
    3: "could not join LiveKit: no answer at its URL from the agents' network (LiveKit must listen on the agents' "
       "gateway: bind_addresses; `orchestrator network` prints it; its ports must be in ORCH_AGENT_HOST_PORTS)",
    4: "lost its LiveKit connection and could not get it back",
    137: "killed (out of memory, or stopped by force)",
}


def exit_reason(code: int | None, *, then: str = "") -> str | None:
    """The reason for a non-zero exit (None for 0 or unknown); `then` says what the engine did since
    ("restarting": in its back-off; "restarted": running again after it)."""
    if not code:
        return None
    what = EXIT_REASONS.get(code, f"exited with code {code}")
    return f"exit {code}{f', {then}' if then else ''}: {what}"


def failing(reason: str | None) -> bool:
    """A reason that says an agent exited with an error (exit_reason's wording), as opposed to an engine state."""
    return bool(reason) and reason.startswith("exit ")
