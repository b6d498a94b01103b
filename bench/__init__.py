"""Benchmark harness: kvraft side by side with etcd and a naive all-values-in-Raft design.

Nothing in here is imported by the `kvraft` or `api` packages; it only talks HTTP to clusters it
starts itself on 127.0.0.1. Entry points, run from the repository root: `python -m bench.compare`
and `python -m bench.latency`.
"""
