"""The agent container orchestrator: one Docker container per (client, agent, room)."""

__version__ = "0.1.0"
