"""The pruner: old log rows and fully delivered old events go, in small batches; nothing that
still has to be delivered is touched."""

from __future__ import annotations

import asyncpg
import structlog

from engine.config import RetentionConfig
from engine.ops.pruner import Pruner
from tests.conftest import wait_until
from tests.integration.test_delivery import EngineFactory, add_event, add_webhook


async def test_prunes_old_logs_and_delivered_events_only(
    db: asyncpg.Connection, engine: EngineFactory
) -> None:
    # Topics {}: these two only get the events targeted at them.
    paused = await add_webhook(db, "http://127.0.0.1:9/paused", [], status="paused")
    failed = await add_webhook(db, "http://127.0.0.1:9/failed", [], status="paused")
    old_pending = await add_event(db, "order.created", {}, webhook_id=paused)
    old_failed = await add_event(db, "order.created", {}, webhook_id=failed)
    await db.execute("UPDATE webhook_queue SET failed_at = now() WHERE webhook_id = $1", failed)
    # Old, fully delivered events (no queue rows), and a recent one.
    await db.execute(
        "INSERT INTO webhook_events (topic, created_at) "
        "SELECT 'order.created', now() - interval '40 days' FROM generate_series(1, 7)"
    )
    recent = await add_event(db, "order.created", {})
    await db.execute(
        "UPDATE webhook_events SET created_at = now() - interval '40 days' WHERE id = ANY($1)",
        [old_pending, old_failed],
    )
    await db.execute(
        "INSERT INTO webhook_logs (request_id, webhook_id, event_ids, attempt, delivered_at, "
        "duration_ms, method, url, request_headers, request_body, success) "
        "SELECT gen_random_uuid(), $1, '{1}', 1, now() - make_interval(days => d), 1, 'POST', "
        "'http://127.0.0.1:9/', '{}', '', true FROM generate_series(1, 45) d",
        paused,
    )
    with structlog.testing.capture_logs() as logs:
        engine(
            retention={
                "logs_days": 30,
                "events_days": 30,
                "prune_interval_s": 0.1,
                "prune_batch": 2,
            }
        )

        async def pruned() -> bool:
            old_logs = await db.fetchval(
                "SELECT count(*) FROM webhook_logs WHERE delivered_at < now() - interval '30 days'"
            )
            events = await db.fetchval("SELECT count(*) FROM webhook_events")
            return bool(old_logs == 0 and events == 3)

        await wait_until(pruned, what="old rows pruned")
    assert await db.fetchval("SELECT count(*) FROM webhook_logs") == 29
    remaining = {r["id"] for r in await db.fetch("SELECT id FROM webhook_events")}
    assert remaining == {old_pending, old_failed, recent}
    assert await db.fetchval("SELECT count(*) FROM webhook_queue") == 2
    assert {e.get("table") for e in logs if e["event"] == "pruner.pruned"} == {"logs", "events"}


def test_zero_retention_prunes_nothing() -> None:
    config = RetentionConfig(logs_days=0, events_days=0)
    assert Pruner(store=None, config=config)._targets == []  # type: ignore[arg-type]
    only_logs = Pruner(store=None, config=RetentionConfig(events_days=0))  # type: ignore[arg-type]
    assert only_logs._targets == [("prune_logs", 30 * 86400.0)]
