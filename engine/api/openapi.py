"""The OpenAPI 3.1 document, generated from the route table and the msgspec types the handlers
use, so it cannot drift from what the server does."""

from __future__ import annotations

import re
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

import msgspec

from engine.api.routes import Route
from engine.api.schemas import BIGINT_MAX, Problem

_REF = "#/components/schemas/{name}"
_PATH_PARAMS: dict[str, dict[str, Any]] = {
    "id": {"type": "integer", "minimum": 1, "maximum": BIGINT_MAX},
    "request_id": {"type": "string", "format": "uuid"},
}
# Every authenticated route can answer these.
_ALWAYS = (401, 503)


def document(routes: Sequence[Route], *, version: str) -> dict[str, Any]:
    types = [Problem]
    for route in routes:
        types.extend(t for t in (route.body, route.query) if t is not None)
        types.extend(_alternatives(route.response))
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    schema_of = dict(zip(map(id, types), schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(
            route, schema_of, components
        )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "webhook-engine management API",
            "version": version,
            "description": "Manage webhooks, send events and follow deliveries, per tenant. "
            "Authenticate with Authorization: Bearer <key> (webhook-engine api-key create). "
            "Errors are RFC 9457 problem documents.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def _operation(
    route: Route, schema_of: dict[int, Any], components: dict[str, Any]
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": route.handler.__name__,
        "summary": route.summary,
        "tags": [route.tag],
        "responses": _responses(route, schema_of),
    }
    if route.description:
        op["description"] = route.description
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": _PATH_PARAMS[name]}
        for name in re.findall(r"\{(\w+)\}", route.path)
    ]
    if route.query is not None:
        parameters.extend(_query_parameters(components[route.query.__name__]))
    if parameters:
        op["parameters"] = parameters
    if route.body is not None:
        op["requestBody"] = {
            "required": not route.body_optional,
            "content": {"application/json": {"schema": schema_of[id(route.body)]}},
        }
    if route.open:
        op["security"] = []
    return op


def _responses(route: Route, schema_of: dict[int, Any]) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, text in ((route.ok, route.summary), *route.also):
        answer: dict[str, Any] = {"description": text}
        options = [schema_of[id(t)] for t in _alternatives(route.response)]
        if options:
            schema = options[0] if len(options) == 1 else {"anyOf": options}
            answer["content"] = {"application/json": {"schema": schema}}
        responses[str(status)] = answer
    problem = {"application/problem+json": {"schema": schema_of[id(Problem)]}}
    errors = set(route.errors)
    if not route.open:
        errors.update(_ALWAYS)
        if route.write:
            errors.add(403)
    for status in sorted(errors):
        responses[str(status)] = {"description": HTTPStatus(status).phrase, "content": problem}
    return responses


def _alternatives(response: Any) -> list[Any]:
    """A route's response types: none, one, or a tuple of alternatives (msgspec cannot put
    two untagged Structs in one union)."""
    if response is None:
        return []
    return list(response) if isinstance(response, tuple) else [response]


def _query_parameters(component: dict[str, Any]) -> list[dict[str, Any]]:
    required = set(component.get("required", ()))
    return [
        {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": _without_null(schema),
        }
        for name, schema in component["properties"].items()
    ]


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is absent or a value; JSON null has no spelling in a query string."""
    options = schema.get("anyOf")
    if options is None:
        return schema
    rest = [o for o in options if o != {"type": "null"}]
    extra = {k: v for k, v in schema.items() if k != "anyOf" and not (k == "default" and v is None)}
    return {**rest[0], **extra} if len(rest) == 1 else {"anyOf": rest, **extra}
