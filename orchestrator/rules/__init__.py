"""Pure rules: naming, rooms, planner, agent states, usage, isolation, the view, the launch spec.

No I/O and no SDK here; every module is table-tested."""
