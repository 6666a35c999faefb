"""/v1/webhooks/{id}/test, /logs, /logs/{request_id}, /stats and /replay against a real server,
Postgres, daemon and receiver."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from tests.conftest import wait_until
from tests.integration.conftest import Api
from tests.integration.test_delivery import EngineFactory
from tests.receiver import Receiver

ADD_LOGS = """
INSERT INTO webhook_logs (request_id, webhook_id, event_ids, attempt, delivered_at, duration_ms,
                          method, url, request_headers, request_body, status_code, success)
SELECT gen_random_uuid(), $1, ARRAY[g::bigint], 1,
       timestamptz '2026-01-01 00:00:00+00' + g * interval '1 minute', 7, 'POST', 'u', '{}', 'b',
       CASE WHEN g % 3 = 0 THEN 500 ELSE 200 END, g % 3 <> 0
FROM generate_series(1, $2::int) AS g
"""


async def test_send_test_waits_for_its_log_row(
    api: Api, receiver: Receiver, engine: EngineFactory
) -> None:
    hook = await api.webhook(receiver.url("/hook"), topics=[], auth_type="basic")
    engine()
    result = await api.ok(
        "POST", f"/v1/webhooks/{hook['id']}/test", params={"wait": "5"}, json={"payload": {"a": 1}}
    )
    log = result["log"]
    assert log["success"] and log["status_code"] == 200
    assert log["event_ids"] == [result["event_id"]]
    assert b'"webhook.test"' in receiver.at("/hook")[0].body
    # The whole row, credentials masked.
    assert log["request_headers"]["Authorization"] == "Basic ********"
    assert hook["basic_password"] not in str(result)
    custom = await api.ok(
        "POST", f"/v1/webhooks/{hook['id']}/test", params={"wait": "5"}, json={"topic": "ping"}
    )
    assert b'"ping"' in receiver.at("/hook")[1].body and custom["log"]["success"]


async def test_send_test_without_a_daemon_answers_202(api: Api, db: asyncpg.Connection) -> None:
    hook = await api.webhook(topics=["*"])
    answer = await api.call("POST", f"/v1/webhooks/{hook['id']}/test", params={"wait": "0.2"})
    assert answer.status == 202 and answer.body["log"] is None
    queued = await db.fetchrow(
        "SELECT * FROM webhook_queue WHERE event_id = $1", answer.body["event_id"]
    )
    assert queued is not None and queued["webhook_id"] == hook["id"]
    assert (await api.call("POST", "/v1/webhooks/999999/test")).status == 404
    too_long = await api.call("POST", f"/v1/webhooks/{hook['id']}/test", params={"wait": "6"})
    assert too_long.status == 422


async def test_logs_newest_first_filtered_and_paged(api: Api, db: asyncpg.Connection) -> None:
    hook = await api.webhook()
    other = await api.webhook()
    await db.execute(ADD_LOGS, hook["id"], 30)
    await db.execute(ADD_LOGS, other["id"], 5)
    path = f"/v1/webhooks/{hook['id']}/logs"
    everything = await api.ok("GET", path)
    times = [row["delivered_at"] for row in everything["data"]]
    assert len(times) == 30 and times == sorted(times, reverse=True)
    assert set(everything["data"][0]) == {
        "request_id",
        "delivered_at",
        "success",
        "status_code",
        "duration_ms",
        "attempt",
        "event_ids",
    }
    failed = await api.ok("GET", path, params={"success": "false"})
    assert len(failed["data"]) == 10 and not any(r["success"] for r in failed["data"])
    window = await api.ok(
        "GET", path, params={"since": "2026-01-01T00:10:00Z", "until": "2026-01-01T00:20:00Z"}
    )
    assert [r["event_ids"][0] for r in window["data"]] == list(range(19, 9, -1))
    seen: list[str] = []
    cursor = None
    while True:
        page = await api.ok(
            "GET", path, params={"limit": "7", **({"cursor": cursor} if cursor else {})}
        )
        seen.extend(r["request_id"] for r in page["data"])
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert seen == [r["request_id"] for r in everything["data"]]
    one = await api.ok("GET", f"{path}/{seen[0]}")
    assert one["request_body"] == "b" and one["webhook_id"] == hook["id"]
    # A request of another webhook is not found through this one.
    theirs = await db.fetchval(
        "SELECT request_id::text FROM webhook_logs WHERE webhook_id = $1 LIMIT 1", other["id"]
    )
    assert (await api.call("GET", f"{path}/{theirs}")).status == 404
    assert (await api.call("GET", f"{path}/not-a-uuid")).status == 404


async def test_stats(api: Api, db: asyncpg.Connection) -> None:
    hook = await api.webhook(topics=["*"])
    await db.execute(ADD_LOGS, hook["id"], 30)
    await db.execute("INSERT INTO webhook_events (topic) SELECT 'a' FROM generate_series(1, 4)")
    await db.execute(
        "UPDATE webhook_queue SET failed_at = now() WHERE event_id IN "
        "(SELECT event_id FROM webhook_queue ORDER BY event_id LIMIT 1)"
    )
    path = f"/v1/webhooks/{hook['id']}/stats"
    stats = await api.ok("GET", path)
    assert stats == {
        "since": None,
        "delivered": 20,
        "failed_attempts": 10,
        "pending": 3,
        "given_up": 1,
    }
    later = await api.ok("GET", path, params={"since": "2026-01-01T00:15:00Z"})
    assert (later["delivered"], later["failed_attempts"]) == (10, 6)
    assert later["since"].startswith("2026-01-01T00:15:00")


async def test_replay_failed_events_and_history(api: Api, db: asyncpg.Connection) -> None:
    hook = await api.webhook(topics=["order.*"])
    other = await api.webhook(topics=["order.*"], tenant="acme")
    await db.execute(
        "INSERT INTO webhook_events (topic, created_at) SELECT t, timestamptz '2026-01-01' + "
        "g * interval '1 hour' FROM generate_series(1, 6) g, "
        "unnest(ARRAY['order.created', 'refund.created']) t"
    )
    await db.execute("INSERT INTO webhook_events (tenant, topic) VALUES ('acme', 'order.created')")
    path = f"/v1/webhooks/{hook['id']}/replay"
    # All six matching events are queued already: nothing to queue twice.
    assert (await api.ok("POST", path, json={"since": "2025-01-01T00:00:00Z"}))["count"] == 0
    await db.execute("DELETE FROM webhook_queue WHERE webhook_id = $1", hook["id"])
    await db.execute(
        "INSERT INTO webhook_queue (webhook_id, event_id, attempts, failed_at) "
        "SELECT $1, id, 7, now() FROM webhook_events WHERE topic = 'order.created' AND tenant = '' "
        "ORDER BY id LIMIT 2",
        hook["id"],
    )
    dry = await api.ok("POST", path, params={"dry_run": "true"}, json={"failed": True})
    assert dry == {"count": 2, "dry_run": True}
    assert await db.fetchval("SELECT count(*) FROM webhook_queue WHERE failed_at IS NOT NULL") == 2
    assert (await api.ok("POST", path, json={"failed": True}))["count"] == 2
    pending = await db.fetch(
        "SELECT attempts, failed_at FROM webhook_queue WHERE webhook_id = $1", hook["id"]
    )
    assert [(r["attempts"], r["failed_at"]) for r in pending] == [(0, None), (0, None)]
    # History: order.created of 03:00, 04:00 and 05:00 (refund.created does not match, the
    # acme event is another tenant's).
    window = {"since": "2026-01-01T03:00:00Z", "until": "2026-01-01T05:30:00Z"}
    assert (await api.ok("POST", path, params={"dry_run": "true"}, json=window))["count"] == 3
    assert (await api.ok("POST", path, json=window))["count"] == 3
    assert (await api.ok("POST", path, json=window))["count"] == 0
    ids = await db.fetchval(
        "SELECT array_agg(id ORDER BY id) FROM webhook_events WHERE topic = 'order.created'"
    )
    acme_event = ids[-1]
    picked = await api.ok("POST", path, json={"event_ids": [ids[5], acme_event]})
    assert picked["count"] == 1  # the other tenant's event is not replayed here
    queued = await db.fetchval(
        "SELECT count(*) FROM webhook_queue WHERE webhook_id = $1", hook["id"]
    )
    assert queued == 6
    assert (await api.call("POST", path, json={})).status == 422
    assert (await api.call("POST", path, json={"failed": True, "event_ids": [1]})).status == 422
    assert (
        await api.call("POST", "/v1/webhooks/999999/replay", json={"failed": True})
    ).status == 404
    assert other["id"] != hook["id"]


async def test_replayed_events_are_delivered(
    api: Api, db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    async def refuse(_request: web.Request, _body: bytes) -> web.StreamResponse:
        return web.Response(status=500)

    receiver.on("/hook", refuse)
    hook = await api.webhook(receiver.url("/hook"), topics=["*"], retry=False)
    await api.ok("POST", "/v1/events", 201, json=[{"topic": "a"}, {"topic": "b"}])
    engine()

    async def given_up() -> bool:
        return bool(
            await db.fetchval("SELECT count(*) = 2 FROM webhook_queue WHERE failed_at IS NOT NULL")
        )

    await wait_until(given_up, what="both given up")
    del receiver.handlers["/hook"]
    assert (await api.ok("POST", f"/v1/webhooks/{hook['id']}/replay", json={"failed": True}))[
        "count"
    ] == 2

    async def delivered() -> bool:
        return bool(await db.fetchval("SELECT count(*) = 0 FROM webhook_queue"))

    await wait_until(delivered, what="replayed events delivered")
    stats = await api.ok("GET", f"/v1/webhooks/{hook['id']}/stats")
    assert (stats["delivered"], stats["failed_attempts"], stats["given_up"]) == (2, 2, 0)
