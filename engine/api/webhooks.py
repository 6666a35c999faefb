"""/v1/webhooks: list, count, create, read (with health), replace, update, delete, and the
signing secret (rotate, reveal). Each handler: parse, one store call, render."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from engine.api.context import scope_of, store_of
from engine.api.io import (
    decode_cursor,
    encode,
    encode_cursor,
    found,
    path_id,
    read_body,
    read_query,
    respond,
)
from engine.api.problems import not_found
from engine.api.routes import Route
from engine.api.schemas import (
    SecretRotate,
    Webhook,
    WebhookCount,
    WebhookCountQuery,
    WebhookCreate,
    WebhookCreated,
    WebhookHealth,
    WebhookListQuery,
    WebhookPage,
    WebhookPatch,
    WebhookPut,
    WebhookSecret,
)


class _Cursor(msgspec.Struct):
    after: int


def _columns(body: msgspec.Struct) -> dict[str, Any]:
    """The columns a body sets (UNSET fields are left out), without `tenant`."""
    columns: dict[str, Any] = msgspec.to_builtins(body)
    columns.pop("tenant", None)
    return columns


async def list_webhooks(request: web.Request) -> web.Response:
    query = read_query(request, WebhookListQuery)
    after = decode_cursor(query.cursor, _Cursor).after if query.cursor else 0
    rows = await store_of(request).list_webhooks(
        scope_of(request),
        tenant=query.tenant,
        status=query.status,
        topic=query.topic,
        q=query.q,
        after_id=after,
        limit=query.limit + 1,
    )
    page = rows[: query.limit]
    has_more = len(rows) > query.limit
    return encode(
        WebhookPage(
            data=[msgspec.json.decode(doc, type=Webhook) for _, doc in page],
            next_cursor=encode_cursor(_Cursor(after=page[-1][0])) if has_more else None,
            has_more=has_more,
        )
    )


async def count_webhooks(request: web.Request) -> web.Response:
    query = read_query(request, WebhookCountQuery)
    count = await store_of(request).count_webhooks(scope_of(request), status=query.status)
    return encode(WebhookCount(count=count))


async def create_webhook(request: web.Request) -> web.Response:
    body: WebhookCreate = await read_body(request, WebhookCreate)
    scope = scope_of(request)
    doc = await store_of(request).create_webhook(
        scope, scope.tenant_for_new(body.tenant), _columns(body)
    )
    return respond(WebhookCreated, doc, status=201)


async def get_webhook(request: web.Request) -> web.Response:
    webhook_id = path_id(request, "webhook")
    doc = await store_of(request).get_webhook(scope_of(request), webhook_id)
    return respond(WebhookHealth, found(doc, "webhook"))


async def replace_webhook(request: web.Request) -> web.Response:
    webhook_id = path_id(request, "webhook")
    body = await read_body(request, WebhookPut)
    doc = await store_of(request).update_webhook(scope_of(request), webhook_id, _columns(body))
    return respond(Webhook, found(doc, "webhook"))


async def update_webhook(request: web.Request) -> web.Response:
    webhook_id = path_id(request, "webhook")
    body = await read_body(request, WebhookPatch)
    doc = await store_of(request).update_webhook(scope_of(request), webhook_id, _columns(body))
    return respond(Webhook, found(doc, "webhook"))


async def delete_webhook(request: web.Request) -> web.Response:
    webhook_id = path_id(request, "webhook")
    if not await store_of(request).delete_webhook(scope_of(request), webhook_id):
        raise not_found("webhook")
    return web.Response(status=204)


async def rotate_secret(request: web.Request) -> web.Response:
    webhook_id = path_id(request, "webhook")
    body: SecretRotate = await read_body(request, SecretRotate, optional=True)
    doc = await store_of(request).rotate_secret(scope_of(request), webhook_id, body.secret)
    return respond(WebhookSecret, found(doc, "webhook"))


async def reveal_secret(request: web.Request) -> web.Response:
    webhook_id = path_id(request, "webhook")
    doc = await store_of(request).reveal_secret(scope_of(request), webhook_id)
    return respond(WebhookSecret, found(doc, "webhook"))


_ONE = "/v1/webhooks/{id}"
_BODY_ERRORS = (400, 404, 413, 415, 422)
ROUTES = (
    Route(
        method="GET",
        path="/v1/webhooks",
        handler=list_webhooks,
        summary="List webhooks",
        description="Filters combine; pages go in id order, so rows inserted meanwhile only "
        "ever appear on later pages. Pass next_cursor as cursor for the next page.",
        tag="webhooks",
        query=WebhookListQuery,
        response=WebhookPage,
        errors=(422,),
    ),
    Route(
        method="GET",
        path="/v1/webhooks/count",
        handler=count_webhooks,
        summary="Count webhooks",
        tag="webhooks",
        query=WebhookCountQuery,
        response=WebhookCount,
        errors=(422,),
    ),
    Route(
        method="POST",
        path="/v1/webhooks",
        handler=create_webhook,
        summary="Create a webhook",
        description="Answers the secret and basic credentials, given or generated: the only "
        "read besides GET .../secret that shows them.",
        tag="webhooks",
        body=WebhookCreate,
        response=WebhookCreated,
        ok=201,
        write=True,
        errors=(400, 413, 415, 422),
    ),
    Route(
        method="GET",
        path=_ONE,
        handler=get_webhook,
        summary="A webhook and its health",
        tag="webhooks",
        response=WebhookHealth,
        errors=(404,),
    ),
    Route(
        method="PUT",
        path=_ONE,
        handler=replace_webhook,
        summary="Replace a webhook",
        description="Columns the body leaves out go back to their defaults.",
        tag="webhooks",
        body=WebhookPut,
        response=Webhook,
        write=True,
        errors=_BODY_ERRORS,
    ),
    Route(
        method="PATCH",
        path=_ONE,
        handler=update_webhook,
        summary="Change some columns of a webhook",
        tag="webhooks",
        body=WebhookPatch,
        response=Webhook,
        write=True,
        errors=_BODY_ERRORS,
    ),
    Route(
        method="DELETE",
        path=_ONE,
        handler=delete_webhook,
        summary="Delete a webhook",
        description="Its undelivered events (pending and given up) are dropped with it; the "
        "events stay in webhook_events for other webhooks and history.",
        tag="webhooks",
        ok=204,
        write=True,
        errors=(404,),
    ),
    Route(
        method="POST",
        path=_ONE + "/secret/rotate",
        handler=rotate_secret,
        summary="Rotate the signing secret",
        description="The new secret (given, or generated) signs from now on and is answered "
        "once; the old one keeps signing alongside for delivery.previous_secret_ttl_s.",
        tag="webhooks",
        body=SecretRotate,
        body_optional=True,
        response=WebhookSecret,
        write=True,
        errors=(*_BODY_ERRORS, 409),
    ),
    Route(
        method="GET",
        path=_ONE + "/secret",
        handler=reveal_secret,
        summary="Reveal the secret and credentials",
        description="Needs a key that may write.",
        tag="webhooks",
        response=WebhookSecret,
        write=True,
        errors=(404,),
    ),
)
