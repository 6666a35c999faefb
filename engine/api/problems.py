"""Every error the API answers, as an RFC 9457 problem document, from one middleware. Client
input never produces a 500 or a traceback, and no answer repeats a secret: database messages
have credentials in URLs masked, and unexpected errors are logged, not shown."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from http import HTTPStatus

import asyncpg
import msgspec
import structlog
from aiohttp import web

from engine.api.context import SETTINGS
from engine.api.schemas import FieldError
from engine.api.schemas import Problem as ProblemDoc
from engine.db.api_store import ForeignTenant, IdempotencyConflict, NoSecret, TargetNotFound

log = structlog.get_logger("engine.api")

PROBLEM_JSON = "application/problem+json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Trigger messages start with "webhooks.<column>"; the column is the field.
_COLUMN_PREFIX = re.compile(r"^webhooks?(?:_events)?\.(\w+)")
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]*@")
_MSGSPEC_PATH = re.compile(r" - at `\$(.*)`$")
_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `(.*)`$")
# Server-side states a client cannot cause: the database is busy, restarting or gone.
_UNAVAILABLE_CLASSES = ("08", "53", "57", "40", "55")


class Problem(Exception):
    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: Sequence[FieldError] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = list(errors)
        self.headers = headers or {}

    def response(self) -> web.Response:
        doc = ProblemDoc(
            type="about:blank",
            title=HTTPStatus(self.status).phrase,
            status=self.status,
            detail=self.detail,
            errors=self.errors,
        )
        return web.Response(
            status=self.status,
            body=msgspec.json.encode(doc),
            content_type=PROBLEM_JSON,
            headers=self.headers,
        )


def not_found(what: str) -> Problem:
    return Problem(404, f"no such {what}")


def invalid(field: str | None, message: str) -> Problem:
    return Problem(422, message, errors=[FieldError(field=field, message=message)])


def from_validation(exc: msgspec.ValidationError, where: str = "") -> Problem:
    """msgspec's message names the path (`$.topics[0]`); that path is the field."""
    text = str(exc)
    path = ""
    at = _MSGSPEC_PATH.search(text)
    if at:
        text = text[: at.start()]
        path = at.group(1).lstrip(".")
    unknown = _UNKNOWN_FIELD.match(text)
    if unknown:
        path = f"{path}.{unknown.group(1)}" if path else unknown.group(1)
    field = f"{where}{path}" if path else (where.rstrip(".") or None)
    return invalid(field, text)


def from_database(exc: asyncpg.PostgresError) -> Problem | None:
    """A database refusal caused by the request, as a 4xx; None for anything else."""
    state = exc.sqlstate or ""
    message = _URL_USERINFO.sub(r"\1***@", exc.args[0] if exc.args else str(exc))
    # 22: bad data (NUL in text, a number out of range); 54: too big or too deep for Postgres.
    if state in ("23514", "23502", "23503") or state[:2] in ("22", "54"):
        column = getattr(exc, "column_name", None)
        prefixed = _COLUMN_PREFIX.match(message)
        field = column or (prefixed.group(1) if prefixed else None)
        return invalid(field, message)
    if state == "23505":
        return Problem(409, "conflicts with an existing row")
    if state[:2] in _UNAVAILABLE_CLASSES:
        return Problem(503, "the database is unavailable or busy; try again")
    return None


_StoreRefusal = TargetNotFound | IdempotencyConflict | NoSecret | ForeignTenant


def _from_store(exc: _StoreRefusal) -> Problem:
    if isinstance(exc, TargetNotFound):
        return invalid(f"[{exc.index}].webhook_id", "webhook_id names no webhook of this tenant")
    if isinstance(exc, IdempotencyConflict):
        return Problem(409, "idempotency_key was used before for a different event")
    if isinstance(exc, NoSecret):
        return Problem(409, f"this webhook's auth_type ({exc}) has no secret to rotate")
    return invalid("tenant", "a tenant key can only act in its own tenant")


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Problem as problem:
        return problem.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        detail = HTTPStatus(exc.status).phrase
        if exc.status == 413:
            detail = (
                f"the body is larger than the limit of {request.app[SETTINGS].max_body_bytes} bytes"
            )
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return Problem(exc.status, detail, headers=headers).response()
    except (TargetNotFound, IdempotencyConflict, NoSecret, ForeignTenant) as exc:
        return _from_store(exc).response()
    except asyncpg.PostgresError as exc:
        refused = from_database(exc)
        if refused is None:
            log.error("api.database_error", path=request.path, sqlstate=exc.sqlstate)
            return Problem(500, "internal error").response()
        return refused.response()
    except asyncpg.DataError as exc:  # asyncpg refused to encode a parameter
        return invalid(None, f"a value is out of range: {type(exc).__name__}").response()
    except UnicodeEncodeError:
        return invalid(None, "text must be valid Unicode (no lone surrogates)").response()
    except (asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, TimeoutError) as exc:
        log.warning("api.database_unavailable", path=request.path, error=type(exc).__name__)
        return Problem(503, "the database is unavailable; try again").response()
    except Exception:
        log.exception("api.internal_error", path=request.path, method=request.method)
        return Problem(500, "internal error").response()
