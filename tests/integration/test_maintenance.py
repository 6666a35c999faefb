"""The daemon vacuums a queue that is mostly dead rows."""

from __future__ import annotations

import asyncpg
import structlog

from tests.conftest import wait_until
from tests.integration.test_delivery import EngineFactory, add_webhook, queue_empty
from tests.receiver import Receiver


async def test_queue_is_vacuumed_after_heavy_churn(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    await add_webhook(db, receiver.url("/hook"), ["*"])
    await db.execute(
        "INSERT INTO webhook_events (topic, payload) "
        "SELECT 'order.created', '{}' FROM generate_series(1, 1500)"
    )
    with structlog.testing.capture_logs() as logs:
        engine(
            delivery={"per_endpoint_concurrency": 32, "concurrency": 32},
            maintenance={"queue_vacuum_check_s": 0.2, "queue_vacuum_min_dead": 1000},
        )
        await wait_until(lambda: queue_empty(db), within_s=30, what="queue drained")

        async def vacuumed() -> bool:
            return any(
                e["event"] == "queue.vacuumed" and e["table"] == "webhook_queue" for e in logs
            )

        await wait_until(vacuumed, within_s=15, what="the queue vacuumed")
    stats = await db.fetchrow(
        "SELECT vacuum_count, n_dead_tup FROM pg_stat_user_tables WHERE relname = 'webhook_queue'"
    )
    assert stats is not None
    assert stats["vacuum_count"] >= 1
    event = next(
        e for e in logs if e["event"] == "queue.vacuumed" and e["table"] == "webhook_queue"
    )
    assert event["dead_rows"] >= 1000
