"""Supervision: the tree, the engine that turns crashes into decisions, restart strategies and budgets,
pauses, hotspots and pool-process recycling."""
