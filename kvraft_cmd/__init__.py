"""The ``kvraft`` console script (``kvraft_cmd.main:main``, also ``python -m kvraft``): the
composition root above the store package ``kvraft`` and its web layer ``api``."""
