"""`orchestrator ...`: the command line (commands in .main, .agents, .tenants; pure views in .views)."""

from orchestrator.cli.main import app

__all__ = ["app"]
