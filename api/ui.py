"""The dashboard page at / and the OpenAPI document at /openapi.json. Placeholder (issue 7)."""

from __future__ import annotations

from flask import Flask

from kvraft.node import Node


def register(app: Flask, node: Node) -> None:
    """Add the dashboard and OpenAPI routes to ``app``."""
