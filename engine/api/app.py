"""The aiohttp application: middlewares (errors outermost, then auth), the routes of every
resource module, and the OpenAPI document generated from them."""

from __future__ import annotations

import re
from collections.abc import Sequence

import msgspec
from aiohttp import web

from engine import __version__
from engine.api import deliveries, events, meta, webhooks
from engine.api.auth import authenticate
from engine.api.context import ROUTES, SETTINGS, STORE
from engine.api.openapi import document
from engine.api.problems import problems
from engine.api.routes import Route
from engine.config import ApiConfig
from engine.db.api_store import ApiStore

ALL_ROUTES: tuple[Route, ...] = (
    *meta.ROUTES,
    *webhooks.ROUTES,
    *events.ROUTES,
    *deliveries.ROUTES,
)


def create_app(store: ApiStore, settings: ApiConfig) -> web.Application:
    app = web.Application(
        middlewares=[problems, authenticate], client_max_size=settings.max_body_bytes
    )
    app[STORE] = store
    app[SETTINGS] = settings
    app[ROUTES] = {route.handler: route for route in ALL_ROUTES}
    app[meta.OPENAPI] = msgspec.json.encode(openapi_document(ALL_ROUTES))
    for route in ALL_ROUTES:
        app.router.add_route(route.method, _aiohttp_path(route.path), route.handler)
    return app


def openapi_document(routes: Sequence[Route] = ALL_ROUTES) -> dict[str, object]:
    return document(routes, version=__version__)


def _aiohttp_path(path: str) -> str:
    """Ids in paths are digits (anything else is simply not found)."""
    return re.sub(r"\{id\}", r"{id:\\d+}", path)
