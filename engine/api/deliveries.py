"""/v1/webhooks/{id}/…: a test delivery, the request log, stats and replay."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

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
    LogListQuery,
    LogPage,
    LogRow,
    LogSummary,
    Replayed,
    ReplayIn,
    ReplayQuery,
    SendTest,
    SendTestQuery,
    SendTestResult,
    Stats,
    StatsQuery,
)


class _LogCursor(msgspec.Struct):
    at: datetime
    id: UUID


async def send_test(request: web.Request) -> web.Response:
    webhook_id = path_id(request, "webhook")
    query = read_query(request, SendTestQuery)
    body: SendTest = await read_body(request, SendTest, optional=True)
    sent = await store_of(request).send_test(
        scope_of(request),
        webhook_id,
        topic=body.topic,
        payload=msgspec.json.encode(body.payload).decode(),
        wait_s=query.wait,
    )
    event_id, log = found(sent, "webhook")
    result = SendTestResult(
        event_id=event_id, log=msgspec.json.decode(log, type=LogRow) if log else None
    )
    return encode(result, status=200 if log else 202)


async def list_logs(request: web.Request) -> web.Response:
    webhook_id = path_id(request, "webhook")
    query = read_query(request, LogListQuery)
    before = decode_cursor(query.cursor, _LogCursor) if query.cursor else None
    doc = await store_of(request).list_logs(
        scope_of(request),
        webhook_id,
        since=query.since,
        until=query.until,
        success=query.success,
        before=(before.at, before.id) if before else None,
        limit=query.limit + 1,
    )
    rows = msgspec.json.decode(found(doc, "webhook"), type=list[LogSummary])
    page = rows[: query.limit]
    has_more = len(rows) > query.limit
    last = page[-1] if page else None
    cursor = encode_cursor(_LogCursor(at=last.delivered_at, id=last.request_id)) if last else None
    return encode(LogPage(data=page, next_cursor=cursor if has_more else None, has_more=has_more))


async def get_log(request: web.Request) -> web.Response:
    webhook_id = path_id(request, "webhook")
    try:
        request_id = UUID(request.match_info["request_id"])
    except ValueError:
        raise not_found("log row") from None
    doc = await store_of(request).get_log(scope_of(request), webhook_id, request_id)
    return respond(LogRow, found(doc, "log row"))


async def webhook_stats(request: web.Request) -> web.Response:
    webhook_id = path_id(request, "webhook")
    query = read_query(request, StatsQuery)
    doc = await store_of(request).webhook_stats(scope_of(request), webhook_id, query.since)
    return respond(Stats, found(doc, "webhook"))


async def replay(request: web.Request) -> web.Response:
    webhook_id = path_id(request, "webhook")
    query = read_query(request, ReplayQuery)
    body: ReplayIn = await read_body(request, ReplayIn)
    count = await store_of(request).replay(
        scope_of(request),
        webhook_id,
        failed=body.failed,
        since=body.since,
        until=body.until,
        event_ids=body.event_ids,
        dry_run=query.dry_run,
    )
    return encode(Replayed(count=found(count, "webhook"), dry_run=query.dry_run))


_ONE = "/v1/webhooks/{id}"
ROUTES = (
    Route(
        method="POST",
        path=_ONE + "/test",
        handler=send_test,
        summary="Send a test event to this webhook",
        description="Inserts one event (topic webhook.test unless given) targeted at this "
        "webhook, delivered by the daemon like any other. With ?wait=N (at most 5 s) the "
        "answer waits for its log row: 200 with it, or 202 without it when it is not there "
        "yet.",
        tag="deliveries",
        query=SendTestQuery,
        body=SendTest,
        body_optional=True,
        response=SendTestResult,
        also=((202, "queued; its log row is not there yet"),),
        write=True,
        errors=(400, 404, 413, 415, 422),
    ),
    Route(
        method="GET",
        path=_ONE + "/logs",
        handler=list_logs,
        summary="This webhook's requests, newest first",
        tag="deliveries",
        query=LogListQuery,
        response=LogPage,
        errors=(404, 422),
    ),
    Route(
        method="GET",
        path=_ONE + "/logs/{request_id}",
        handler=get_log,
        summary="One request, whole (credentials masked)",
        tag="deliveries",
        response=LogRow,
        errors=(404,),
    ),
    Route(
        method="GET",
        path=_ONE + "/stats",
        handler=webhook_stats,
        summary="Delivered events and failed requests since a time; pending and given up now",
        tag="deliveries",
        query=StatsQuery,
        response=Stats,
        errors=(404, 422),
    ),
    Route(
        method="POST",
        path=_ONE + "/replay",
        handler=replay,
        summary="Queue deliveries again",
        description='{"failed": true}: given-up deliveries go back to pending with fresh '
        'attempts. {"since", "until"} and/or {"event_ids"}: the tenant\'s events from the '
        "retained history that this webhook's topics match (or that targeted it) are queued "
        "again. An event already queued for the webhook is not queued twice. ?dry_run=true "
        "only counts.",
        tag="deliveries",
        query=ReplayQuery,
        body=ReplayIn,
        response=Replayed,
        write=True,
        errors=(400, 404, 413, 415, 422),
    ),
)
