"""Failures: per-endpoint backoff, recovery, and a failing endpoint never blocks a healthy one."""

from __future__ import annotations

import asyncio
import itertools
import json
import ssl

import asyncpg
import trustme
from aiohttp import web

from tests.conftest import wait_until
from tests.integration.test_delivery import (
    EngineFactory,
    add_event,
    add_events,
    add_webhook,
    one,
    queue_empty,
)
from tests.receiver import Receiver


def status_handler(state: dict[str, int]) -> object:
    async def handler(_request: web.Request, _body: bytes) -> web.StreamResponse:
        return web.Response(status=state["status"], text="down" if state["status"] >= 500 else "")

    return handler


async def test_failing_endpoint_backs_off_then_recovers(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    state = {"status": 500}
    receiver.on("/flaky", status_handler(state))  # type: ignore[arg-type]
    flaky = await add_webhook(db, receiver.url("/flaky"), ["*"])
    first = await add_event(db, "order.created", {"n": 1})
    engine(retry={"schedule_s": [0.3, 0.6, 0.6, 0.6, 0.6]})

    async def failed_twice() -> bool:
        return bool(
            await db.fetchval("SELECT consecutive_failures >= 2 FROM webhooks WHERE id = $1", flaky)
        )

    await wait_until(failed_twice, what="two consecutive failures recorded")
    row = await one(db, "SELECT * FROM webhooks WHERE id = $1", flaky)
    assert row["next_retry_after"] is not None
    queued = await one(db, "SELECT * FROM webhook_queue WHERE webhook_id = $1", flaky)
    assert queued["event_id"] == first and queued["attempts"] >= 2
    assert queued["last_error"] == "HTTP 500"
    failures = await db.fetch(
        "SELECT * FROM webhook_logs WHERE webhook_id = $1 ORDER BY delivered_at", flaky
    )
    assert all(not f["success"] and f["status_code"] == 500 for f in failures)
    # Backing off: attempts are spaced by at least the initial backoff.
    gaps = [
        (b["delivered_at"] - a["delivered_at"]).total_seconds()
        for a, b in itertools.pairwise(failures)
    ]
    assert all(gap >= 0.25 for gap in gaps), gaps

    state["status"] = 200
    await wait_until(lambda: queue_empty(db), what="backlog delivered after recovery")
    row = await one(db, "SELECT * FROM webhooks WHERE id = $1", flaky)
    assert row["consecutive_failures"] == 0 and row["next_retry_after"] is None
    assert json.loads(receiver.at("/flaky")[-1].body)["id"] == first


async def test_backing_off_endpoint_holds_its_events_in_order(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    state = {"status": 503}
    receiver.on("/down", status_handler(state))  # type: ignore[arg-type]
    down = await add_webhook(db, receiver.url("/down"), ["*"])
    for n in range(5):
        await add_event(db, "order.created", {"n": n})
    engine(
        delivery={"per_endpoint_concurrency": 1},
        retry={"schedule_s": [0.2, 0.3, 0.3, 0.3, 0.3, 0.3]},
    )
    await receiver.wait_for(lambda: len(receiver.at("/down")) >= 3, what="three attempts")
    # While failing, only the head of the queue is tried, one probe at a time.
    assert receiver.max_in_flight["/down"] == 1
    tried = {json.loads(r.body)["data"]["n"] for r in receiver.at("/down")}
    assert tried == {0}
    state["status"] = 200
    await wait_until(lambda: queue_empty(db), what="queue drained")
    delivered = [json.loads(r.body)["data"]["n"] for r in receiver.at("/down")]
    assert delivered[-5:] == [0, 1, 2, 3, 4]
    assert await db.fetchval("SELECT consecutive_failures FROM webhooks WHERE id = $1", down) == 0


async def test_concurrent_failures_count_once(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    async def fail_together(_request: web.Request, _body: bytes) -> web.StreamResponse:
        # Answer only once all six requests have arrived: they are surely concurrent.
        await receiver.wait_for(lambda: receiver.in_flight >= 6, what="six in flight")
        return web.Response(status=500)

    receiver.on("/down", fail_together)
    down = await add_webhook(db, receiver.url("/down"), ["*"])
    await db.execute(
        "INSERT INTO webhook_events (topic, payload) "
        "SELECT 'order.created', '{}' FROM generate_series(1, 6)"
    )
    engine(
        delivery={"per_endpoint_concurrency": 6},
        retry={"schedule_s": [30.0, 60.0]},
    )

    async def all_released() -> bool:
        logged = await db.fetchval("SELECT count(*) FROM webhook_logs")
        leased = await db.fetchval(
            "SELECT count(*) FROM webhook_queue WHERE locked_until IS NOT NULL"
        )
        return bool(logged == 6 and leased == 0)

    await wait_until(all_released, what="the first round recorded")
    assert receiver.max_in_flight["/down"] == 6
    # Six requests in flight together when the endpoint failed: one failure, one backoff step.
    row = await one(db, "SELECT * FROM webhooks WHERE id = $1", down)
    assert row["consecutive_failures"] == 1
    assert row["next_retry_after"] is not None


async def test_failing_endpoint_does_not_block_a_healthy_one(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    receiver.on("/hang", receiver.hang)
    receiver.on("/down", status_handler({"status": 500}))  # type: ignore[arg-type]
    await add_webhook(db, receiver.url("/hang"), ["*"])
    await add_webhook(db, receiver.url("/down"), ["*"])
    healthy = await add_webhook(db, receiver.url("/ok"), ["*"])
    await add_events(db, 200)
    engine(delivery={"concurrency": 8, "per_endpoint_concurrency": 4, "total_timeout_s": 3.0})

    async def healthy_done() -> bool:
        left = await db.fetchval(
            "SELECT count(*) FROM webhook_queue WHERE webhook_id = $1", healthy
        )
        return bool(left == 0)

    await wait_until(healthy_done, within_s=10, what="healthy endpoint drained")
    assert len(receiver.at("/ok")) == 200
    assert await db.fetchval("SELECT count(*) FROM webhook_queue") == 400


async def test_timeout_is_a_logged_failure(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    receiver.on("/hang", receiver.hang)
    webhook_id = await add_webhook(db, receiver.url("/hang"), ["*"])
    await add_event(db, "order.created", {})
    engine(delivery={"total_timeout_s": 0.5, "lease_s": 5.0})

    async def logged() -> bool:
        return bool(await db.fetchval("SELECT count(*) FROM webhook_logs"))

    await wait_until(logged, what="a log row for the timeout")
    log = await one(db, "SELECT * FROM webhook_logs WHERE webhook_id = $1", webhook_id)
    assert not log["success"] and log["status_code"] is None
    assert "timeout" in log["error"]
    assert 400 <= log["duration_ms"] < 3000


async def test_connection_refused_is_a_logged_failure(
    db: asyncpg.Connection, engine: EngineFactory
) -> None:
    # A port nobody listens on: bind, note the port, close.
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    webhook_id = await add_webhook(db, f"http://127.0.0.1:{port}/gone", ["*"])
    await add_event(db, "order.created", {})
    engine()

    async def logged() -> bool:
        return bool(await db.fetchval("SELECT count(*) FROM webhook_logs"))

    await wait_until(logged, what="a log row for the refused connection")
    log = await one(db, "SELECT * FROM webhook_logs WHERE webhook_id = $1", webhook_id)
    assert not log["success"] and log["error"].startswith("connection failed")
    assert await db.fetchval("SELECT count(*) FROM webhook_queue") == 1


async def test_redirect_is_not_followed(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    async def redirect(_request: web.Request, _body: bytes) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": "/elsewhere"})

    receiver.on("/moved", redirect)
    await add_webhook(db, receiver.url("/moved"), ["*"])
    await add_event(db, "order.created", {})
    engine()

    async def logged() -> bool:
        return bool(await db.fetchval("SELECT count(*) FROM webhook_logs"))

    await wait_until(logged, what="a log row for the redirect")
    log = await one(db, "SELECT * FROM webhook_logs")
    assert not log["success"] and log["status_code"] == 302
    assert "not followed" in log["error"]
    assert receiver.at("/elsewhere") == []


async def test_paused_webhook_keeps_events_until_resumed(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    paused = await add_webhook(db, receiver.url("/paused"), ["*"], status="paused")
    await add_webhook(db, receiver.url("/live"), ["*"])
    await add_event(db, "order.created", {})
    engine(delivery={"poll_interval_s": 60.0})
    await receiver.wait_for(lambda: len(receiver.at("/live")) == 1)
    assert receiver.at("/paused") == []

    async def only_paused_left() -> bool:
        return bool(await db.fetchval("SELECT count(*) FROM webhook_queue") == 1)

    await wait_until(only_paused_left, what="live endpoint's row completed")
    # Resuming wakes the daemon (trigger NOTIFY), no poll needed.
    await db.execute("UPDATE webhooks SET status = 'active' WHERE id = $1", paused)
    await receiver.wait_for(lambda: len(receiver.at("/paused")) == 1, within_s=5)


async def test_untrusted_tls_certificate_is_a_logged_failure(
    db: asyncpg.Connection, engine: EngineFactory
) -> None:
    # A certificate from a throwaway CA the engine does not trust.
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    tls = Receiver(ssl_context=context)
    await tls.start()
    try:
        webhook_id = await add_webhook(db, tls.url("/hook"), ["*"])
        await add_event(db, "order.created", {})
        engine()

        async def logged() -> bool:
            return bool(await db.fetchval("SELECT count(*) FROM webhook_logs"))

        await wait_until(logged, what="a log row for the TLS failure")
        log = await one(db, "SELECT * FROM webhook_logs WHERE webhook_id = $1", webhook_id)
        assert not log["success"] and log["status_code"] is None
        assert log["error"].startswith("TLS"), log["error"]
        assert tls.requests == []
    finally:
        await tls.stop()
