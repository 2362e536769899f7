"""Benchmarks of the orchestrator against same-run baselines (a real program, not a test)."""
