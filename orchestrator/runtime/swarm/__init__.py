"""The Docker Swarm runtime: one replicated service per key, and its pure rules."""
