"""Runs one node under gunicorn: one gthread worker, many threads, no preload.

The :class:`~kvraft.node.Node` (and with it pysyncobj's tick thread) is created in ``load()``,
which gunicorn calls in the worker process after the fork. The worker exits at once if its master
dies (so ``kill -9`` of the master is a crash of the whole node, as a chaos test expects), and it
closes the node on a normal shutdown.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from gunicorn.app.base import BaseApplication

from kvraft.config import Config

from .app import create_app


def _watch_parent(ppid: int) -> None:
    while True:
        if os.getppid() != ppid:
            os._exit(1)
        time.sleep(0.2)


class NodeServer(BaseApplication):
    def __init__(self, config: Config) -> None:
        self.kv = config
        self.node = None
        super().__init__()

    def load_config(self) -> None:
        c = self.kv
        for key, value in {
            "bind": c.http,
            "workers": 1,
            "worker_class": "gthread",
            "threads": c.threads,
            "keepalive": 75,
            "timeout": 60,
            "graceful_timeout": 5,
            "preload_app": False,
            "loglevel": c.log_level,
            "accesslog": None,
            "proc_name": f"kvraft-{c.id}",
            "worker_exit": self._worker_exit,
        }.items():
            self.cfg.set(key, value)

    def load(self):
        from kvraft.node import Node

        level = getattr(logging, self.kv.log_level.upper(), logging.WARNING)
        logging.basicConfig(level=level, format=f"%(asctime)s {self.kv.id} %(name)s %(message)s")
        threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
        self.node = Node(self.kv)
        return create_app(self.node)

    def _worker_exit(self, _server, _worker) -> None:
        if self.node is not None:
            self.node.close()


def serve(config: Config) -> None:
    """Block serving one node until SIGINT/SIGTERM."""
    NodeServer(config).run()
