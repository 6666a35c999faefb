"""A route: method, path, handler and the types it reads and answers. The app registers these,
the auth middleware reads `write`/`open`, and the OpenAPI document is generated from them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, kw_only=True, slots=True)
class Route:
    method: str
    path: str  # OpenAPI form: /v1/webhooks/{id}
    handler: Handler
    summary: str
    tag: str
    ok: int = 200
    response: Any = None  # None: no body (204); a tuple: one of these types
    body: Any = None
    body_optional: bool = False
    query: Any = None
    # Needs a write-capable key (every POST/PUT/PATCH/DELETE, and reading a secret).
    write: bool = False
    # No key needed (only GET /v1/health).
    open: bool = False
    # Other success answers, e.g. {202: "..."}
    also: tuple[tuple[int, str], ...] = ()
    errors: tuple[int, ...] = ()
    description: str = ""
