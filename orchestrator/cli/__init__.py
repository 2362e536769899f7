"""`orchestrator ...`: the command line (commands in .main, .agents, .tenants; pure views in .views).

`app` is imported lazily so that the API can use the pure views without loading the CLI.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "app":
        import importlib

        return importlib.import_module(f"{__name__}.main").app
    raise AttributeError(name)
