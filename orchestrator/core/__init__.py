"""Shared kernel: domain types, the two error roots, the clock, locks, logs and config files."""
