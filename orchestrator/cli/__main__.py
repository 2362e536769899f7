"""`python -m orchestrator.cli`: the same as the `orchestrator` console script."""

from .main import main

main()
