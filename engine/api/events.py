"""/v1/events: intake over HTTP (one event or a batch, one INSERT, the same fan-out as SQL) and
an event's delivery status per webhook."""

from __future__ import annotations

import msgspec
from aiohttp import web

from engine.api.context import scope_of, store_of
from engine.api.io import found, path_id, read_body, respond
from engine.api.routes import Route
from engine.api.schemas import Event as EventOut
from engine.api.schemas import EventIn, EventList, EventsIn, EventStatus
from engine.db.api_store import NewEvent, Scope


def _new_event(scope: Scope, event: EventIn) -> NewEvent:
    return NewEvent(
        tenant=scope.tenant_for_new(event.tenant),
        topic=event.topic,
        payload=msgspec.json.encode(event.payload).decode(),
        webhook_id=event.webhook_id,
        idempotency_key=event.idempotency_key,
    )


async def add_events(request: web.Request) -> web.Response:
    body: EventIn | list[EventIn] = await read_body(request, EventsIn)
    scope = scope_of(request)
    batch = body if isinstance(body, list) else [body]
    docs = await store_of(request).add_events([_new_event(scope, e) for e in batch])
    if isinstance(body, list):
        return respond(EventList, '{"data":[' + ",".join(docs) + "]}", status=201)
    return respond(EventOut, docs[0], status=201)


async def get_event(request: web.Request) -> web.Response:
    event_id = path_id(request, "event")
    doc = await store_of(request).get_event(scope_of(request), event_id)
    return respond(EventStatus, found(doc, "event"))


ROUTES = (
    Route(
        method="POST",
        path="/v1/events",
        handler=add_events,
        summary="Send one event or a batch of up to 1,000",
        description="All events of a request are inserted by one INSERT into webhook_events, "
        "so they fan out exactly as events inserted with SQL. An idempotency_key seen before "
        "in the tenant answers the earlier event and inserts nothing; with a different "
        'topic, payload or webhook_id it is a 409. A list answers {"data": [...]} in order.',
        tag="events",
        body=EventsIn,
        response=(EventOut, EventList),
        ok=201,
        write=True,
        errors=(400, 409, 413, 415, 422),
    ),
    Route(
        method="GET",
        path="/v1/events/{id}",
        handler=get_event,
        summary="An event and its delivery status per webhook",
        tag="events",
        response=EventStatus,
        errors=(404,),
    ),
)
