"""A database made by the previous release (schema 4, kept in tests/upgrade/) upgrades with
`init-db` to the current schema with nothing lost, and what was queued is then delivered."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg

from engine.daemon import schema_problem
from engine.db.store import SCHEMA_VERSION, Store, init_schema
from tests.conftest import RunningEngine, wait_until
from tests.integration.test_delivery import add_event
from tests.receiver import Receiver

EngineFactory = Callable[..., RunningEngine]
V4_SCHEMA = Path(__file__).resolve().parent.parent / "upgrade" / "schema_v4.sql"


async def snapshot(conn: asyncpg.Connection) -> dict[str, Any]:
    """Everything a user would miss if it were lost, in comparable form."""
    return {
        "webhooks": [
            dict(r)
            for r in await conn.fetch(
                "SELECT id, name, url, topics, status, auth_type, secret, basic_username, "
                "basic_password, headers::text, maximum_events, profile, previous_secrets::text, "
                "consecutive_failures, disabled_reason FROM webhooks ORDER BY id"
            )
        ],
        "events": [
            dict(r)
            for r in await conn.fetch(
                "SELECT id, topic, payload::text, created_at, webhook_id FROM webhook_events "
                "ORDER BY id"
            )
        ],
        "queue": [
            dict(r)
            for r in await conn.fetch(
                "SELECT webhook_id, event_id, attempts, locked_until, last_error, failed_at "
                "FROM webhook_queue ORDER BY webhook_id, event_id"
            )
        ],
        "logs": [
            dict(r)
            for r in await conn.fetch(
                "SELECT request_id, webhook_id, event_ids, success, request_body "
                "FROM webhook_logs ORDER BY request_id"
            )
        ],
    }


async def fill_v4(conn: asyncpg.Connection, url: str) -> dict[str, int]:
    """What a v4 user had: webhooks of several kinds, pending, leased and failed deliveries,
    log rows, a rotated secret."""
    hmac = await conn.fetchval(
        "INSERT INTO webhooks (url, topics, name) VALUES ($1, '{order.*}', 'shop') RETURNING id",
        url + "/hmac",
    )
    basic = await conn.fetchval(
        "INSERT INTO webhooks (url, topics, auth_type, maximum_events) "
        "VALUES ($1, '{*}', 'basic', 10) RETURNING id",
        url + "/basic",
    )
    paused = await conn.fetchval(
        "INSERT INTO webhooks (url, topics, status) VALUES ($1, '{order.created}', 'paused') "
        "RETURNING id",
        url + "/paused",
    )
    await conn.execute(
        "UPDATE webhooks SET secret = 'whsec_' || encode(convert_to(repeat('k', 32), 'UTF8'), "
        "'base64') WHERE id = $1",
        hmac,
    )
    await conn.execute(
        "INSERT INTO webhook_events (topic, payload) "
        "SELECT 'order.created', jsonb_build_object('n', g) FROM generate_series(1, 5) g"
    )
    failed_event = await conn.fetchval(
        "INSERT INTO webhook_events (topic, payload, webhook_id) VALUES ('x.y', '{}', $1) "
        "RETURNING id",
        hmac,
    )
    await conn.execute(
        "UPDATE webhook_queue SET failed_at = now(), attempts = 8, last_error = 'HTTP 500' "
        "WHERE event_id = $1",
        failed_event,
    )
    # A lease left by a daemon that stopped (already expired).
    await conn.execute(
        "UPDATE webhook_queue SET locked_until = now() - interval '1 minute', attempts = 1 "
        "WHERE webhook_id = $1 AND event_id = (SELECT min(event_id) FROM webhook_queue "
        "WHERE webhook_id = $1)",
        basic,
    )
    await conn.execute(
        "INSERT INTO webhook_logs (request_id, webhook_id, event_ids, attempt, delivered_at, "
        "duration_ms, method, url, request_headers, request_body, success) VALUES "
        "(gen_random_uuid(), $1, '{1}', 1, now(), 5, 'POST', $2, '{}', '{\"a\": 1}', false)",
        hmac,
        url,
    )
    return {"hmac": hmac, "basic": basic, "paused": paused, "failed_event": failed_event}


async def test_a_v4_database_upgrades_with_nothing_lost_and_delivers(
    empty_dsn: str, receiver: Receiver, engine: EngineFactory
) -> None:
    conn = await asyncpg.connect(empty_dsn)
    try:
        await conn.execute(V4_SCHEMA.read_text(encoding="utf-8"))
        assert await conn.fetchval("SELECT webhook_engine_schema_version()") == 4
        made = await fill_v4(conn, receiver.base_url)
        before = await snapshot(conn)

        store = await Store.open(empty_dsn, pool_size=1, synchronous_commit="on")
        try:
            problem = schema_problem(await store.schema_version())
        finally:
            await store.close()
        assert problem is not None and "run `webhook-engine init-db`" in problem

        await init_schema(conn)
        await init_schema(conn)  # and again: re-running is a no-op
        assert await conn.fetchval("SELECT webhook_engine_schema_version()") == SCHEMA_VERSION
        assert await snapshot(conn) == before
        assert await conn.fetchval("SELECT count(*) FROM webhooks WHERE tenant <> ''") == 0

        # Queued work is delivered, the failed delivery stays failed (replayable), the paused
        # endpoint keeps its events, and new events still find their webhooks.
        later = await add_event(conn, "order.updated", {"after": "upgrade"})
        running = engine(database={"dsn": empty_dsn})
        await wait_until(
            lambda: pending_only_for(conn, made["paused"]), what="active endpoints drained"
        )
        assert await running.stop() == 0
        failed = await conn.fetchrow(
            "SELECT failed_at IS NOT NULL AS failed, attempts FROM webhook_queue "
            "WHERE event_id = $1",
            made["failed_event"],
        )
        assert failed is not None and (failed["failed"], failed["attempts"]) == (True, 8)
    finally:
        await conn.close()

    hmac_ids = sorted(json.loads(r.body)["id"] for r in receiver.at("/hmac"))
    assert hmac_ids == [e["id"] for e in before["events"][:5]] + [later]
    basic_ids = sorted(e["id"] for r in receiver.at("/basic") for e in json.loads(r.body))
    assert basic_ids == [e["id"] for e in before["events"][:5]] + [later]
    assert receiver.at("/paused") == []


async def pending_only_for(conn: asyncpg.Connection, paused: int) -> bool:
    rows = await conn.fetch("SELECT DISTINCT webhook_id FROM webhook_queue WHERE failed_at IS NULL")
    return [r["webhook_id"] for r in rows] == [paused]
