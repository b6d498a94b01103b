"""WebSocket endpoints (/report, /watch) and export/import. Placeholder: filled in by issue 4."""

from __future__ import annotations

from flask import Flask

from kvraft.node import Node


def register(app: Flask, node: Node) -> None:
    """Add the websocket and export/import routes to ``app``."""
