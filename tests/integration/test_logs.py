"""webhook_logs: one row per request, bodies cut to the limit, credentials masked."""

from __future__ import annotations

import json

import asyncpg
import structlog
from aiohttp import web

from tests.conftest import wait_until
from tests.integration.test_delivery import (
    EngineFactory,
    add_event,
    add_webhook,
    one,
    queue_empty,
)
from tests.receiver import Receiver


async def test_log_row_per_request_with_fields(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    async def answer(_request: web.Request, _body: bytes) -> web.StreamResponse:
        return web.Response(
            status=202, text="accepted", headers={"X-Receipt": "r-1", "Set-Cookie": "s=secret"}
        )

    receiver.on("/hook", answer)
    webhook_id = await add_webhook(db, receiver.url("/hook"), ["*"])
    e1 = await add_event(db, "order.created", {"n": 1})
    e2 = await add_event(db, "order.created", {"n": 2})
    engine()
    await wait_until(lambda: queue_empty(db), what="queue drained")
    rows = await db.fetch("SELECT * FROM webhook_logs ORDER BY event_ids")
    assert [r["event_ids"] for r in rows] == [[e1], [e2]]
    row = rows[0]
    assert row["webhook_id"] == webhook_id and row["attempt"] == 1
    assert row["success"] and row["status_code"] == 202 and row["error"] is None
    assert row["method"] == "POST" and row["url"] == receiver.url("/hook")
    assert row["duration_ms"] >= 0 and row["delivered_at"] is not None
    assert json.loads(row["request_body"])["id"] == e1
    assert row["response_body"] == "accepted"
    request_headers = json.loads(row["request_headers"])
    assert request_headers["webhook-id"] == f"msg_{e1}"
    response_headers = json.loads(row["response_headers"])
    assert response_headers["X-Receipt"] == "r-1"
    assert response_headers["Set-Cookie"] == "********"
    assert len({r["request_id"] for r in rows}) == 2


async def test_bodies_truncated_and_credentials_masked(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    async def chatty(_request: web.Request, _body: bytes) -> web.StreamResponse:
        return web.Response(status=500, text="é" * 5000 + "\x00tail")

    receiver.on("/hook", chatty)
    await add_webhook(
        db,
        receiver.url("/hook"),
        ["*"],
        auth_type="basic",
        basic_username="user",
        basic_password="topsecret",
        headers='{"X-Api-Key": "k-123", "X-Plain": "visible"}',
    )
    await add_event(db, "order.created", {"pad": "x" * 2000})
    engine(recorder={"log_body_limit_chars": 100})

    async def logged() -> bool:
        return bool(await db.fetchval("SELECT count(*) FROM webhook_logs"))

    await wait_until(logged, what="a log row")
    row = await one(db, "SELECT * FROM webhook_logs")
    assert len(row["request_body"]) == 100
    assert row["response_body"] == "é" * 100
    headers = json.loads(row["request_headers"])
    assert headers["Authorization"] == "Basic ********"
    assert headers["X-Api-Key"] == "********"
    assert headers["X-Plain"] == "visible"
    assert "topsecret" not in row["request_headers"]
    # What was sent was the real credential, of course.
    assert receiver.requests[0].headers["Authorization"].startswith("Basic dXNlcjp0b3Bz")


async def test_periodic_summary_line_for_operators(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    async def down(_request: web.Request, _body: bytes) -> web.StreamResponse:
        return web.Response(status=500)

    receiver.on("/down", down)
    await add_webhook(db, receiver.url("/ok"), ["*"])
    await add_webhook(db, receiver.url("/down"), ["*"], retry=False)
    await db.execute(
        "INSERT INTO webhook_events (topic, payload) "
        "SELECT 'order.created', '{}' FROM generate_series(1, 5)"
    )
    with structlog.testing.capture_logs() as logs:
        engine(recorder={"summary_interval_s": 0.2})

        async def summarised() -> bool:
            total = sum(e["delivered_events"] for e in logs if e["event"] == "delivery.summary")
            return bool(total == 5)

        await wait_until(summarised, what="summary lines covering the 5 deliveries")
    summaries = [e for e in logs if e["event"] == "delivery.summary"]
    assert sum(e["failed_requests"] for e in summaries) == 5
    assert sum(e["gave_up_events"] for e in summaries) == 5
    assert sum(e["requests"] for e in summaries) == 10
    assert all(e["log_level"] == "info" for e in summaries)


async def test_cut_bodies_record_their_original_size(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    async def declared(_request: web.Request, _body: bytes) -> web.StreamResponse:
        return web.Response(text="r" * 50_000)  # Content-Length: 50000

    async def undeclared(request: web.Request, _body: bytes) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(50):
            await response.write(b"s" * 1000)
        await response.write_eof()
        return response

    async def read_whole(_request: web.Request, _body: bytes) -> web.StreamResponse:
        return web.Response(text="é" * 1500)  # 3000 bytes: read to the end, cut to 1000 chars

    handlers = {"/declared": declared, "/undeclared": undeclared, "/whole": read_whole}
    ids: dict[str, int] = {}
    for path, handler in handlers.items():
        receiver.on(path, handler)
        ids[path] = await add_webhook(db, receiver.url(path), [])
    ids["/small"] = await add_webhook(db, receiver.url("/small"), [])
    for path, webhook_id in ids.items():
        pad = "x" * 5000 if path == "/declared" else "x"
        await add_event(db, "order.created", {"pad": pad}, webhook_id=webhook_id)
    engine(recorder={"log_body_limit_chars": 1000})
    await wait_until(lambda: queue_empty(db), what="all delivered")

    rows = {
        path: await one(db, "SELECT * FROM webhook_logs WHERE webhook_id = $1", webhook_id)
        for path, webhook_id in ids.items()
    }
    sent = {r.path: len(r.body) for r in receiver.requests}
    declared_row = rows["/declared"]
    assert len(declared_row["request_body"]) == 1000
    assert declared_row["request_body_size"] == sent["/declared"] > 5000
    assert declared_row["response_body"] == "r" * 1000
    assert declared_row["response_body_size"] == 50_000
    assert declared_row["note"] is None

    # No Content-Length and not read to the end: the bytes read, and the note says so.
    undeclared_row = rows["/undeclared"]
    assert undeclared_row["response_body"] == "s" * 1000
    assert undeclared_row["response_body_size"] == 4000
    assert "size is unknown" in undeclared_row["note"]

    assert rows["/whole"]["response_body"] == "é" * 1000
    assert rows["/whole"]["response_body_size"] == 3000

    for path in ("/undeclared", "/whole", "/small"):
        assert rows[path]["request_body_size"] is None, path
    assert rows["/small"]["response_body"] == "ok"
    assert rows["/small"]["response_body_size"] is None
