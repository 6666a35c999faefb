"""POST /v1/events and GET /v1/events/{id}: the same fan-out as SQL, idempotency, batches, and
the delivery status per webhook (with the real daemon delivering to a real receiver)."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from tests.conftest import wait_until
from tests.integration.conftest import Api
from tests.integration.test_delivery import EngineFactory, queue_empty
from tests.receiver import Receiver


async def test_one_event_fans_out_like_sql(api: Api, db: asyncpg.Connection) -> None:
    orders = await api.webhook(topics=["order.*"])
    await api.webhook(topics=["refund.*"])
    event = await api.ok(
        "POST", "/v1/events", 201, json={"topic": "order.created", "payload": {"n": 1}}
    )
    assert event["topic"] == "order.created" and event["payload"] == {"n": 1}
    assert event["tenant"] == "" and event["webhook_id"] is None
    queued = await db.fetch("SELECT webhook_id FROM webhook_queue WHERE event_id = $1", event["id"])
    assert [r["webhook_id"] for r in queued] == [orders["id"]]


async def test_a_batch_is_one_insert_in_order(api: Api, db: asyncpg.Connection) -> None:
    hook = await api.webhook(topics=["*"])
    batch = [{"topic": f"t.{i}", "payload": {"i": i}} for i in range(1000)]
    answer = await api.ok("POST", "/v1/events", 201, json=batch)
    events = answer["data"]
    assert [e["payload"]["i"] for e in events] == list(range(1000))
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    assert (
        await db.fetchval("SELECT count(*) FROM webhook_queue WHERE webhook_id = $1", hook["id"])
        == 1000
    )
    too_many = await api.call("POST", "/v1/events", json=[{"topic": "a"}] * 1001)
    assert too_many.status == 422
    assert (await api.call("POST", "/v1/events", json=[])).status == 422
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 1000


async def test_idempotency_key_answers_the_first_event(api: Api, db: asyncpg.Connection) -> None:
    first = {"topic": "order.created", "payload": {"n": 1}, "idempotency_key": "order-1"}
    a = await api.ok("POST", "/v1/events", 201, json=first)
    b = await api.ok("POST", "/v1/events", 201, json=first)
    assert a == b
    mixed = await api.ok(
        "POST",
        "/v1/events",
        201,
        json=[first, {"topic": "x"}, {**first, "idempotency_key": "order-2"}, first],
    )
    ids = [e["id"] for e in mixed["data"]]
    assert ids[0] == a["id"] and ids[3] == a["id"] and len(set(ids)) == 3
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 3
    conflict = await api.call("POST", "/v1/events", json={**first, "payload": {"n": 2}})
    assert conflict.status == 409
    # Keys are per tenant: the same key in another tenant is another event.
    other = await api.ok("POST", "/v1/events", 201, json={**first, "tenant": "acme"})
    assert other["id"] != a["id"] and other["tenant"] == "acme"
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 4


async def test_targeted_events_and_unknown_targets(api: Api, db: asyncpg.Connection) -> None:
    hook = await api.webhook(topics=[])
    acme = await api.webhook(topics=[], tenant="acme")
    sent = await api.ok("POST", "/v1/events", 201, json={"topic": "a", "webhook_id": hook["id"]})
    assert (
        await db.fetchval("SELECT webhook_id FROM webhook_queue WHERE event_id = $1", sent["id"])
        == hook["id"]
    )
    # A webhook of another tenant is not a target for this tenant's event.
    wrong = await api.call(
        "POST", "/v1/events", json=[{"topic": "a"}, {"topic": "a", "webhook_id": acme["id"]}]
    )
    assert wrong.status == 422 and wrong.body["errors"][0]["field"] == "[1].webhook_id"
    missing = await api.call("POST", "/v1/events", json={"topic": "a", "webhook_id": 999999})
    assert missing.status == 422
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 1
    bad_topic = await api.call("POST", "/v1/events", json={"topic": "a.*"})
    assert bad_topic.status == 422 and bad_topic.body["errors"][0]["field"] == "topic"


async def test_event_status_per_webhook(
    api: Api, db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    async def refuse(_request: web.Request, _body: bytes) -> web.StreamResponse:
        return web.Response(status=500)

    receiver.on("/bad", refuse)
    good = await api.webhook(receiver.url("/good"), topics=["*"])
    bad = await api.webhook(receiver.url("/bad"), topics=["*"], retry=False)
    paused = await api.webhook(receiver.url("/later"), topics=["*"], status="paused")
    event = await api.ok("POST", "/v1/events", 201, json={"topic": "order.created"})
    engine()

    async def settled() -> bool:
        left = await db.fetchval(
            "SELECT count(*) FROM webhook_queue WHERE failed_at IS NULL AND webhook_id <> $1",
            paused["id"],
        )
        return bool(left == 0)

    await wait_until(settled, what="good delivered, bad given up")
    status = await api.ok("GET", f"/v1/events/{event['id']}")
    by_hook = {d["webhook_id"]: d for d in status["deliveries"]}
    assert by_hook[good["id"]]["status"] == "delivered"
    assert by_hook[good["id"]]["attempts"] == 1
    delivered_log = await db.fetchval(
        "SELECT request_id::text FROM webhook_logs WHERE webhook_id = $1", good["id"]
    )
    assert by_hook[good["id"]]["last_request_id"] == delivered_log
    assert by_hook[bad["id"]]["status"] == "failed" and by_hook[bad["id"]]["attempts"] == 1
    assert by_hook[paused["id"]] == {
        "webhook_id": paused["id"],
        "status": "pending",
        "attempts": 0,
        "last_request_id": None,
    }
    assert (await api.call("GET", "/v1/events/999999")).status == 404
    assert await queue_empty(db) is False
