"""Parse a request into the types of schemas.py and render answers from the store's JSON: the
only place handlers turn bytes into values and back."""

from __future__ import annotations

import base64
import binascii
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from engine.api.context import SETTINGS
from engine.api.problems import Problem, from_validation, invalid, not_found
from engine.api.schemas import BIGINT_MAX

T = TypeVar("T")
JSON = "application/json"


async def read_body(request: web.Request, type_: Any, *, optional: bool = False) -> Any:
    """The JSON body as `type_`: 413 over the limit, 415 not JSON, 400 malformed, 422 invalid.
    `optional`: an empty body means every field takes its default."""
    limit = request.app[SETTINGS].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise Problem(413, f"the body is larger than the limit of {limit} bytes")
    raw = await request.read()  # client_max_size (the same limit) guards chunked bodies
    if not raw and optional:
        raw = b"{}"
    elif request.content_type != JSON:
        raise Problem(415, f"send the body as {JSON}, not {request.content_type or 'nothing'}")
    try:
        return msgspec.json.decode(raw, type=type_)
    except msgspec.ValidationError as exc:
        raise from_validation(exc) from None
    except msgspec.DecodeError as exc:
        raise Problem(400, f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise Problem(400, "the body's JSON is nested too deeply") from None


def read_query(request: web.Request, type_: type[T]) -> T:
    try:
        return msgspec.convert(dict(request.query), type_, strict=False)
    except msgspec.ValidationError as exc:
        raise from_validation(exc) from None


def path_id(request: web.Request, what: str, name: str = "id") -> int:
    """An id from the path (the route admits digits only); out of range is simply not found."""
    value = int(request.match_info[name])
    if not 1 <= value <= BIGINT_MAX:
        raise not_found(what)
    return value


def found(value: T | None, what: str) -> T:
    if value is None:
        raise not_found(what)
    return value


def respond(type_: type[Any], doc: str | bytes, *, status: int = 200) -> web.Response:
    """Render the store's JSON through a response type: only its fields reach the client."""
    value = msgspec.json.decode(doc, type=type_)
    return encode(value, status=status)


def encode(value: Any, *, status: int = 200) -> web.Response:
    return web.Response(status=status, body=msgspec.json.encode(value), content_type=JSON)


def encode_cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(value)).decode().rstrip("=")


def decode_cursor(cursor: str, type_: type[T]) -> T:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return msgspec.json.decode(raw, type=type_)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise invalid("cursor", "not a cursor this API gave out") from None
