"""End to end: insert with SQL, the daemon delivers to a real receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
import structlog
from aiohttp import web
from standardwebhooks.webhooks import Webhook as StandardWebhook

from tests.conftest import RunningEngine, wait_until
from tests.receiver import Receiver

EngineFactory = Callable[..., RunningEngine]


async def add_webhook(db: asyncpg.Connection, url: str, topics: list[str], **cols: Any) -> int:
    names = ["url", "topics", *cols]
    values = [url, topics, *cols.values()]
    placeholders = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    sql = f"INSERT INTO webhooks ({', '.join(names)}) VALUES ({placeholders}) RETURNING id"
    webhook_id: int = await db.fetchval(sql, *values)
    return webhook_id


async def add_event(db: asyncpg.Connection, topic: str, payload: Any, **cols: Any) -> int:
    names = ["topic", "payload", *cols]
    values = [topic, json.dumps(payload), *cols.values()]
    placeholders = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    sql = f"INSERT INTO webhook_events ({', '.join(names)}) VALUES ({placeholders}) RETURNING id"
    event_id: int = await db.fetchval(sql, *values)
    return event_id


async def add_events(db: asyncpg.Connection, count: int, topic: str = "order.created") -> None:
    """`count` events in one statement, payloads {"n": 1} .. {"n": count}."""
    await db.execute(
        "INSERT INTO webhook_events (topic, payload) "
        "SELECT $1, jsonb_build_object('n', g) FROM generate_series(1, $2::int) g",
        topic,
        count,
    )


async def one(db: asyncpg.Connection, sql: str, *args: Any) -> asyncpg.Record:
    row = await db.fetchrow(sql, *args)
    assert row is not None, f"no row for {sql}"
    return row


async def queue_empty(db: asyncpg.Connection) -> bool:
    return bool(await db.fetchval("SELECT count(*) FROM webhook_queue") == 0)


async def test_webhook_defaults(db: asyncpg.Connection) -> None:
    row = await one(
        db,
        "INSERT INTO webhooks (url, topics) VALUES ('http://127.0.0.1:9/hook', '{order.*}') "
        "RETURNING *",
    )
    assert row["auth_type"] == "hmac"
    assert row["status"] == "active"
    assert row["method"] == "POST"
    assert row["maximum_events"] == 1
    assert row["maximum_size"] == 1_000_000
    assert row["consecutive_failures"] == 0
    assert row["secret"].startswith("whsec_")
    StandardWebhook(row["secret"])  # a secret the reference library accepts
    other = await db.fetchval(
        "INSERT INTO webhooks (url) VALUES ('http://127.0.0.1:9/x') RETURNING secret"
    )
    assert other != row["secret"]


@pytest.mark.parametrize(
    ("columns", "values", "message"),
    [
        ("url", "'ftp://example'", "absolute http"),
        ("url, topics", "'http://127.0.0.1:9/', '{a*b}'", "is not a topic"),
        ("url, secret", "'http://127.0.0.1:9/', 'not-a-secret'", "whsec_"),
        ("url, secret", "'http://127.0.0.1:9/', 'whsec_!!!'", "not valid base64"),
        ("url, secret", "'http://127.0.0.1:9/', 'whsec_c2hvcnQ='", "24 to 64 bytes"),
        ("url, method", "'http://127.0.0.1:9/', 'DELETE'", "POST, PUT or PATCH"),
        (
            "url, status",
            "'http://127.0.0.1:9/', 'sleeping'",
            "webhooks.status must be active, paused or disabled",
        ),
        (
            "url, maximum_events",
            "'http://127.0.0.1:9/', 0",
            "webhooks.maximum_events must be from 1 to 10000",
        ),
        ("url, headers", "'http://127.0.0.1:9/', '{\"X-A\": \"a\\nb\"}'", "without CR or LF"),
        ("url, headers", "'http://127.0.0.1:9/', '{\"webhook-signature\": \"x\"}'", "must not set"),
        ("url, headers", "'http://127.0.0.1:9/', '[1]'", "JSON object"),
    ],
)
async def test_bad_webhook_rows_are_refused_clearly(
    db: asyncpg.Connection, columns: str, values: str, message: str
) -> None:
    with pytest.raises(asyncpg.PostgresError, match=message):
        await db.execute(f"INSERT INTO webhooks ({columns}) VALUES ({values})")


async def test_event_for_missing_webhook_is_refused(db: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="does not name a webhook"):
        await add_event(db, "order.created", {}, webhook_id=12345)
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 0


async def test_single_event_signed_and_shaped(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    webhook_id = await add_webhook(db, receiver.url("/hook"), ["order.*"])
    secret = await db.fetchval("SELECT secret FROM webhooks WHERE id = $1", webhook_id)
    engine()
    event_id = await add_event(db, "order.created", {"id": 42, "big": 10**30})
    await receiver.wait_for(lambda: len(receiver.requests) == 1, what="one delivery")
    request = receiver.requests[0]
    assert request.method == "POST"
    assert request.headers["Content-Type"] == "application/json"
    # Verified as an independent receiver would, with the reference library.
    StandardWebhook(secret).verify(request.body, request.headers)
    assert request.headers["webhook-id"] == f"msg_{event_id}"
    body = json.loads(request.body)
    assert body["id"] == event_id
    assert body["type"] == "order.created"
    assert body["data"] == {"id": 42, "big": 10**30}
    assert body["timestamp"].endswith("Z")
    await wait_until(lambda: queue_empty(db), what="queue drained")


async def test_notify_wakes_the_daemon_without_polling(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    await add_webhook(db, receiver.url("/hook"), ["*"])
    with structlog.testing.capture_logs() as logs:
        running = engine(delivery={"poll_interval_s": 60.0})

        async def listening() -> bool:
            return any(e["event"] == "listener.connected" for e in logs)

        await wait_until(listening, what="LISTEN established")
    started = time.monotonic()
    await add_event(db, "order.created", {"n": 1})
    await receiver.wait_for(lambda: len(receiver.requests) == 1, within_s=5.0)
    assert receiver.requests[0].at - started < 2.0, "delivery waited for a poll, not NOTIFY"
    assert not running.task.done()


async def test_rolled_back_insert_is_never_delivered(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    await add_webhook(db, receiver.url("/hook"), ["*"])
    engine()
    tx = db.transaction()
    await tx.start()
    await add_event(db, "order.created", {"n": "rolled back"})
    await tx.rollback()
    marker = await add_event(db, "order.created", {"n": "committed"})
    await receiver.wait_for(lambda: len(receiver.requests) >= 1)
    await wait_until(lambda: queue_empty(db), what="queue drained")
    bodies = [json.loads(r.body) for r in receiver.requests]
    assert [b["id"] for b in bodies] == [marker]
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 1


async def test_fan_out_matches_topics_and_targets(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    exact = await add_webhook(db, receiver.url("/exact"), ["order.created"])
    prefix = await add_webhook(db, receiver.url("/prefix"), ["order.*"])
    everything = await add_webhook(db, receiver.url("/all"), ["*"])
    await add_webhook(db, receiver.url("/none"), ["user.created"])
    targeted = await add_webhook(db, receiver.url("/targeted"), [])
    e1 = await add_event(db, "order.created", {})
    e2 = await add_event(db, "order.updated", {})
    e3 = await add_event(db, "orders.created", {})
    e4 = await add_event(db, "order.created", {}, webhook_id=targeted)
    late = await add_webhook(db, receiver.url("/late"), ["*"])
    e5 = await add_event(db, "invoice.paid", {})
    engine()
    await wait_until(lambda: queue_empty(db), what="queue drained")

    def ids(path: str) -> list[int]:
        return sorted(json.loads(r.body)["id"] for r in receiver.at(path))

    assert ids("/exact") == [e1]
    assert ids("/prefix") == [e1, e2]
    assert ids("/all") == [e1, e2, e3, e5]
    assert ids("/none") == []
    assert ids("/targeted") == [e4]
    assert ids("/late") == [e5], "a webhook created later must not get older events"
    assert {exact, prefix, everything, late}  # ids are distinct rows


async def test_batches_respect_maximum_events_and_order(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    await add_webhook(db, receiver.url("/batch"), ["*"], maximum_events=3)
    await add_events(db, 10)
    engine(delivery={"per_endpoint_concurrency": 1})
    await wait_until(lambda: queue_empty(db), what="queue drained")
    batches = [json.loads(r.body) for r in receiver.requests]
    assert all(isinstance(b, list) and 1 <= len(b) <= 3 for b in batches)
    delivered = [item["data"]["n"] for b in batches for item in b]
    assert delivered == list(range(1, 11))
    assert max(len(b) for b in batches) == 3


async def test_one_event_batch_is_still_an_array(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    await add_webhook(db, receiver.url("/batch"), ["*"], maximum_events=50)
    engine()
    await add_event(db, "order.created", {"n": 1})
    await receiver.wait_for(lambda: len(receiver.requests) == 1)
    body = json.loads(receiver.requests[0].body)
    assert isinstance(body, list) and len(body) == 1 and body[0]["data"] == {"n": 1}


async def test_batches_respect_maximum_size_and_send_oversize_alone(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    limit = 600
    webhook_id = await add_webhook(
        db, receiver.url("/sized"), ["*"], maximum_events=100, maximum_size=limit
    )
    small = [await add_event(db, "t.small", {"pad": "x" * 100}) for _ in range(6)]
    huge = await add_event(db, "t.huge", {"pad": "y" * 5000})
    tail = [await add_event(db, "t.small", {"pad": "z" * 100}) for _ in range(3)]
    engine(delivery={"per_endpoint_concurrency": 1})
    await wait_until(lambda: queue_empty(db), what="queue drained")
    batches = [json.loads(r.body) for r in receiver.requests]
    sizes = {
        tuple(i["id"] for i in b): len(r.body)
        for b, r in zip(batches, receiver.requests, strict=True)
    }
    for ids, size in sizes.items():
        assert size <= limit or ids == (huge,), f"batch {ids} is {size} bytes"
    assert (huge,) in sizes, "the oversize event travels alone"
    delivered = sorted(i["id"] for b in batches for i in b)
    assert delivered == sorted([*small, huge, *tail])
    note = await db.fetchval(
        "SELECT note FROM webhook_logs WHERE webhook_id = $1 AND event_ids = $2",
        webhook_id,
        [huge],
    )
    assert note is not None and "maximum_size" in note and str(huge) in note


async def test_basic_and_none_auth(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    await add_webhook(
        db,
        receiver.url("/basic"),
        ["*"],
        auth_type="basic",
        basic_username="shop",
        basic_password="s3cret",
    )
    await add_webhook(db, receiver.url("/none"), ["*"], auth_type="none")
    await add_event(db, "order.created", {})
    engine()
    await wait_until(lambda: queue_empty(db), what="queue drained")
    (basic,) = receiver.at("/basic")
    (plain,) = receiver.at("/none")
    assert basic.headers["Authorization"] == "Basic c2hvcDpzM2NyZXQ="
    assert "webhook-signature" not in basic.headers
    assert "Authorization" not in plain.headers and "webhook-signature" not in plain.headers


async def test_custom_headers_and_method(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    await add_webhook(db, receiver.url("/put"), ["*"], method="put", headers='{"X-Tenant": "acme"}')
    await add_event(db, "order.created", {})
    engine()
    await receiver.wait_for(lambda: len(receiver.requests) == 1)
    assert receiver.requests[0].method == "PUT"
    assert receiver.requests[0].headers["X-Tenant"] == "acme"


async def test_a_fast_endpoint_is_claimed_further_ahead_within_its_concurrency(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    """An endpoint that answers within milliseconds gets more than PREFETCH rounds of its
    concurrency claimed at once (scheduler.claim_depth), sent by its lane no more than its
    concurrency at a time, each event once."""

    async def quick(_request: web.Request, _body: bytes) -> web.StreamResponse:
        await asyncio.sleep(0.005)
        return web.Response(text="ok")

    receiver.on("/fast", quick)
    await add_webhook(db, receiver.url("/fast"), ["*"])
    await db.execute(
        "INSERT INTO webhook_events (topic, payload) "
        "SELECT 'order.created', '{}' FROM generate_series(1, 1000)"
    )
    engine(delivery={"per_endpoint_concurrency": 4})

    async def leased_deep() -> bool:
        # Two rounds of 4 (PREFETCH) plus outcomes not yet written stay well under 20.
        leased = await db.fetchval("SELECT count(*) FROM webhook_queue WHERE locked_until > now()")
        return bool(leased > 20)

    await wait_until(leased_deep, within_s=20, what="more than 20 events leased at once")
    await wait_until(lambda: queue_empty(db), within_s=30, what="queue drained")
    assert len(receiver.requests) == 1000
    assert len({json.loads(r.body)["id"] for r in receiver.requests}) == 1000
    assert max(receiver.max_in_flight.values()) <= 4


async def test_global_and_per_endpoint_concurrency_limits(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    from aiohttp import web

    async def slow(_request: web.Request, _body: bytes) -> web.StreamResponse:
        await asyncio.sleep(0.05)
        return web.Response(text="ok")

    for path in ("/a", "/b", "/c"):
        receiver.on(path, slow)
        await add_webhook(db, receiver.url(path), ["*"])
    await db.execute(
        "INSERT INTO webhook_events (topic, payload) "
        "SELECT 'order.created', '{}' FROM generate_series(1, 30)"
    )
    engine(delivery={"per_endpoint_concurrency": 3, "concurrency": 5})
    await wait_until(lambda: queue_empty(db), within_s=20, what="queue drained")
    assert len(receiver.requests) == 90
    assert max(receiver.max_in_flight.values()) <= 3
    assert max(receiver.max_in_flight.values()) >= 2, "the limit was never even approached"
    assert receiver.max_total_in_flight <= 5


async def test_a_batch_whose_lease_ran_low_while_waiting_is_claimed_again_not_sent(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    """One slot, a batch claimed ahead waits for it while a slow request holds it; by then its
    lease could expire during its own request, so it is released and claimed afresh."""

    async def slow(_request: web.Request, _body: bytes) -> web.StreamResponse:
        await asyncio.sleep(0.6)  # the receiver's answer time, not a wait of the test
        return web.Response(text="ok")

    receiver.on("/slow", slow)
    await add_webhook(db, receiver.url("/slow"), ["*"])
    await add_events(db, 4)
    with structlog.testing.capture_logs() as logs:
        engine(delivery={"per_endpoint_concurrency": 1, "lease_s": 1.5, "total_timeout_s": 1.0})
        await wait_until(lambda: queue_empty(db), within_s=20, what="all delivered")
    assert sorted(json.loads(r.body)["data"]["n"] for r in receiver.requests) == [1, 2, 3, 4]
    assert any(e["event"] == "delivery.lease_too_short" for e in logs)
    logged = await db.fetch("SELECT attempt FROM webhook_logs")
    assert [r["attempt"] for r in logged] == [1, 1, 1, 1], "a released batch counts no attempt"
