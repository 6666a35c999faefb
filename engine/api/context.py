"""What handlers find on the application and the request: the store, the settings, the caller's
scope (set by the auth middleware, so a handler cannot run without one)."""

from __future__ import annotations

from aiohttp import web

from engine.api.routes import Handler, Route
from engine.config import ApiConfig
from engine.db.api_store import ApiStore, Scope

STORE = web.AppKey("store", ApiStore)
SETTINGS = web.AppKey("settings", ApiConfig)
ROUTES = web.AppKey("routes", dict[Handler, Route])
_SCOPE = web.RequestKey("scope", Scope)


def store_of(request: web.Request) -> ApiStore:
    return request.app[STORE]


def set_scope(request: web.Request, scope: Scope) -> None:
    request[_SCOPE] = scope


def scope_of(request: web.Request) -> Scope:
    try:
        return request[_SCOPE]
    except KeyError:  # an open route asking for a scope: a programming error
        raise RuntimeError("this route is not authenticated") from None


def route_of(request: web.Request) -> Route | None:
    """The Route this request matched; None for an unknown path or method (404/405)."""
    handler = getattr(request.match_info.route, "handler", None)
    return request.app[ROUTES].get(handler)  # type: ignore[arg-type]
