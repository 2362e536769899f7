"""`python -m orchestrator.cli`: the same as the `orchestrator` console script."""

from orchestrator.cli.main import main

main()
