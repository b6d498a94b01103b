"""Chaos runs for kvraft: nemeses that break a real cluster, a workload that records what clients
saw, and a checker that judges the history. Entry point: ``python -m chaos.run smoke|full|negative``
(see docs/CHAOS.md)."""
