"""The command line, `orchestrator ...`: commands (main, agents, keys, tenants), one HTTP helper, pure views and hints."""

from orchestrator.cli.main import app

__all__ = ["app"]
