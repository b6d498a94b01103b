"""The naive design kvraft is compared with: every value goes through pysyncobj's Raft log.

`server.py` is the node (Flask under kvraft's HTTP server, a `ReplDict` replicated by pysyncobj,
like pysyncobj's own kvstorage example); `cluster.py` starts three of them on loopback.
"""
