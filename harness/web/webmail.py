"""Placeholder: routes added by the webmail module."""

from __future__ import annotations

from typing import Any

from aiohttp import web


def add_routes(app: web.Application, server: Any) -> None:
    pass
