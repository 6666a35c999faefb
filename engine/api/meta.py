"""/v1/health (open) and /v1/openapi.json."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from engine.api.context import store_of
from engine.api.io import encode
from engine.api.routes import Route
from engine.api.schemas import Health

OPENAPI = web.AppKey("openapi", bytes)
# A health probe must answer quickly even when Postgres hangs.
_PING_TIMEOUT_S = 2.0


async def health(request: web.Request) -> web.Response:
    ok = await store_of(request).ping(_PING_TIMEOUT_S)
    return encode(Health(status="ok" if ok else "unavailable"), status=200 if ok else 503)


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


ROUTES = (
    Route(
        method="GET",
        path="/v1/health",
        handler=health,
        summary="200 while the database answers, 503 otherwise (no key needed)",
        tag="meta",
        response=Health,
        also=((503, "the database does not answer"),),
        open=True,
    ),
    Route(
        method="GET",
        path="/v1/openapi.json",
        handler=openapi,
        summary="This document",
        tag="meta",
        response=dict[str, Any],
    ),
)
