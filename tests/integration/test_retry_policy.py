"""Retry schedule, giving up, replay, 410, Retry-After and automatic disabling."""

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
from tests.integration.test_processes import run_cli
from tests.receiver import Receiver


def answer(state: dict[str, object]) -> object:
    async def handler(_request: web.Request, _body: bytes) -> web.StreamResponse:
        headers = state.get("headers") or {}
        return web.Response(status=int(state["status"]), headers=headers)  # type: ignore[arg-type, call-overload]

    return handler


async def failed_count(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT count(*) FROM webhook_queue WHERE failed_at IS NOT NULL"))


async def test_gives_up_after_the_last_attempt_then_replays(
    dsn: str, db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    state: dict[str, object] = {"status": 500}
    receiver.on("/hook", answer(state))  # type: ignore[arg-type]
    webhook_id = await add_webhook(db, receiver.url("/hook"), ["*"])
    first = await add_event(db, "order.created", {"n": 1})
    second = await add_event(db, "order.created", {"n": 2})
    with structlog.testing.capture_logs() as logs:
        # One request at a time, three attempts each.
        engine(delivery={"per_endpoint_concurrency": 1}, retry={"schedule_s": [0.1, 0.1]})

        async def both_failed() -> bool:
            return await failed_count(db) == 2

        await wait_until(both_failed, within_s=15, what="both deliveries given up")
    rows = await db.fetch("SELECT * FROM webhook_queue ORDER BY event_id")
    assert [r["event_id"] for r in rows] == [first, second]
    assert all(r["attempts"] == 3 and r["last_error"] == "HTTP 500" for r in rows)
    attempts = await db.fetch("SELECT event_ids, attempt FROM webhook_logs ORDER BY delivered_at")
    assert [(r["event_ids"], r["attempt"]) for r in attempts] == [
        ([first], 1),
        ([first], 2),
        ([first], 3),
        ([second], 1),
        ([second], 2),
        ([second], 3),
    ]
    gave_up = [e for e in logs if e["event"] == "delivery.gave_up"]
    assert [e["event_ids"] for e in gave_up] == [[first], [second]]

    code, output = await run_cli("failed", "--dsn", dsn, "--webhook", str(webhook_id))
    assert code == 0, output
    listed = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert [item["event_id"] for item in listed if "event_id" in item] == [first, second]

    state["status"] = 200
    code, output = await run_cli("replay", "--dsn", dsn, "--webhook", str(webhook_id))
    assert code == 0, output
    await wait_until(lambda: queue_empty(db), what="replayed deliveries delivered")
    delivered = [json.loads(r.body)["id"] for r in receiver.requests[-2:]]
    assert delivered == [first, second]


async def test_retry_false_means_exactly_one_attempt(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    receiver.on("/hook", answer({"status": 503}))  # type: ignore[arg-type]
    await add_webhook(db, receiver.url("/hook"), ["*"], retry=False)
    await add_event(db, "order.created", {})
    engine()

    async def gave_up() -> bool:
        return await failed_count(db) == 1

    await wait_until(gave_up, what="the single attempt failed")
    assert len(receiver.requests) == 1
    assert (await one(db, "SELECT attempts FROM webhook_queue"))["attempts"] == 1


async def test_gone_disables_the_endpoint_and_keeps_its_events(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    state: dict[str, object] = {"status": 410}
    receiver.on("/hook", answer(state))  # type: ignore[arg-type]
    webhook_id = await add_webhook(db, receiver.url("/hook"), ["*"])
    for n in range(3):
        await add_event(db, "order.created", {"n": n})
    with structlog.testing.capture_logs() as logs:
        engine(delivery={"per_endpoint_concurrency": 1})

        async def disabled() -> bool:
            row = await one(db, "SELECT status FROM webhooks WHERE id = $1", webhook_id)
            return bool(row["status"] == "disabled")

        await wait_until(disabled, what="endpoint disabled")
        row = await one(db, "SELECT * FROM webhooks WHERE id = $1", webhook_id)
        assert row["disabled_reason"] == "HTTP 410 Gone" and row["disabled_at"] is not None
        assert await db.fetchval("SELECT count(*) FROM webhook_queue") == 3
        assert await failed_count(db) == 0, "a 410 must not throw the events away"
        assert len(receiver.requests) == 1

        state["status"] = 200
        await db.execute(
            "UPDATE webhooks SET status = 'active', next_retry_after = NULL WHERE id = $1",
            webhook_id,
        )
        await wait_until(lambda: queue_empty(db), what="delivered after re-enabling")
    row = await one(db, "SELECT * FROM webhooks WHERE id = $1", webhook_id)
    assert row["disabled_at"] is None and row["disabled_reason"] is None
    events = [e["event"] for e in logs]
    assert "endpoint.disabled" in events and "endpoint.reenabled" in events


async def test_retry_after_is_honoured(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    state: dict[str, object] = {"status": 429, "headers": {"Retry-After": "3"}}
    receiver.on("/hook", answer(state))  # type: ignore[arg-type]
    webhook_id = await add_webhook(db, receiver.url("/hook"), ["*"])
    await add_event(db, "order.created", {})
    engine()  # the schedule alone would retry after 0.2 s

    async def backing_off() -> bool:
        row = await one(db, "SELECT next_retry_after FROM webhooks WHERE id = $1", webhook_id)
        return row["next_retry_after"] is not None

    await wait_until(backing_off, what="backoff recorded")
    wait = await db.fetchval(
        "SELECT extract(epoch FROM w.next_retry_after - l.delivered_at) "
        "FROM webhooks w JOIN webhook_logs l ON l.webhook_id = w.id WHERE w.id = $1",
        webhook_id,
    )
    assert 2.5 <= float(wait) <= 4.0
    assert len(receiver.requests) == 1


async def test_disabled_after_too_many_consecutive_failures(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    receiver.on("/hook", answer({"status": 500}))  # type: ignore[arg-type]
    webhook_id = await add_webhook(db, receiver.url("/hook"), ["*"], max_consecutive_failures=2)
    await add_event(db, "order.created", {})
    engine(retry={"schedule_s": [0.1, 0.1, 0.1, 0.1, 0.1, 0.1]})

    async def disabled() -> bool:
        row = await one(db, "SELECT status FROM webhooks WHERE id = $1", webhook_id)
        return bool(row["status"] == "disabled")

    await wait_until(disabled, what="endpoint disabled")
    row = await one(db, "SELECT * FROM webhooks WHERE id = $1", webhook_id)
    assert row["consecutive_failures"] == 3
    assert row["disabled_reason"] == "more than 2 consecutive failures"
    assert len(receiver.requests) == 3
    assert await failed_count(db) == 0


async def test_disabled_after_too_many_failures_in_a_window(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    receiver.on("/hook", answer({"status": 500}))  # type: ignore[arg-type]
    webhook_id = await add_webhook(
        db, receiver.url("/hook"), ["*"], failure_window_max=3, failure_window_s=3600
    )
    await add_event(db, "order.created", {})
    engine(retry={"schedule_s": [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]})

    async def disabled() -> bool:
        row = await one(db, "SELECT status FROM webhooks WHERE id = $1", webhook_id)
        return bool(row["status"] == "disabled")

    await wait_until(disabled, what="endpoint disabled")
    row = await one(db, "SELECT * FROM webhooks WHERE id = $1", webhook_id)
    assert row["disabled_reason"] == "more than 3 failures within 1 h"
    assert len(receiver.requests) == 4


async def test_bad_retry_settings_are_refused(db: asyncpg.Connection) -> None:
    for column, value in (("retry_schedule_s", "{5,0}"), ("max_consecutive_failures", "-1")):
        try:
            await db.execute(
                f"INSERT INTO webhooks (url, {column}) VALUES ('http://127.0.0.1:9/', '{value}')"
            )
        except asyncpg.PostgresError as exc:
            assert column in str(exc)
        else:
            raise AssertionError(f"{column} = {value} was accepted")
