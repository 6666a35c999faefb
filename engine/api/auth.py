"""`Authorization: Bearer <key>` for every route but the open ones, in one middleware: it sets
the caller's Scope (tenant or admin) that every store call takes, and refuses writes to
read-only keys."""

from __future__ import annotations

from aiohttp import web

from engine.api.context import route_of, set_scope, store_of
from engine.api.problems import Problem
from engine.api.routes import Handler
from engine.db.api_store import Scope

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="webhook-engine"'}


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = route_of(request)
    if route is not None and route.open:
        return await handler(request)
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise Problem(401, "send an API key: Authorization: Bearer <key>", headers=_CHALLENGE)
    api_key = await store_of(request).authenticate(key)
    if api_key is None:
        raise Problem(401, "the API key is not valid (unknown or revoked)", headers=_CHALLENGE)
    if api_key.read_only and route is not None and route.write:
        raise Problem(403, "this API key is read-only")
    set_scope(request, Scope(tenant=api_key.tenant))
    return await handler(request)
