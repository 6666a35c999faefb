"""The daemon's statements read only the rows they are about, whatever the statistics say.

A table analyzed while it had pages but no live rows (emptied by deletes, or while a bulk insert
was uncommitted) looks empty to the planner until the next ANALYZE. Joined directly, a generic
plan then walked the whole table once per input row: the daemon's own VACUUM ANALYZE of the
queue after a drain did that to `complete_and_log`, and one flush ran for minutes with a million
rows loaded since. The same held for the scheduling statements' look-ups of webhooks.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from engine.db.store import QUERIES, _columns
from engine.models import LogRow

QUEUED = 20_000


async def _statistically_empty_queue_with_rows(db: asyncpg.Connection) -> tuple[int, int]:
    """A webhook and QUEUED rows for it in a queue whose statistics say it has pages but no rows
    (analyzed when everything in it had just been deleted, as after a drain, or while a bulk
    insert was still uncommitted); returns the webhook and the event the statements are given."""
    webhook_id: int = await db.fetchval(
        "INSERT INTO webhooks (url, topics) VALUES ('http://127.0.0.1:9/h', '{}') RETURNING id"
    )
    insert = (
        "INSERT INTO webhook_events (topic, payload, webhook_id) "
        "SELECT 'order.created', '{}', $1 FROM generate_series(1, $2)"
    )
    await db.execute(insert, webhook_id, QUEUED)
    await db.execute("DELETE FROM webhook_queue")
    await db.execute("ANALYZE webhook_queue")
    stats = await db.fetchrow(
        "SELECT relpages, reltuples FROM pg_class WHERE relname = 'webhook_queue'"
    )
    assert stats is not None and stats["relpages"] > 0 and stats["reltuples"] == 0
    await db.execute(insert, webhook_id, QUEUED)
    event_id: int = await db.fetchval(
        "SELECT max(event_id) FROM webhook_queue WHERE webhook_id = $1", webhook_id
    )
    await db.execute(
        "UPDATE webhook_queue SET locked_until = now() + interval '1 minute', attempts = 1 "
        "WHERE webhook_id = $1 AND event_id = $2",
        webhook_id,
        event_id,
    )
    return webhook_id, event_id


READ = (
    "SELECT seq_tup_read + coalesce(idx_tup_fetch, 0) "
    "FROM pg_stat_xact_user_tables WHERE relname = $1"
)


async def _rows_read(
    db: asyncpg.Connection, name: str, *args: Any, table: str = "webhook_queue"
) -> int:
    """Queue rows the statement read (by index or sequentially), in a rolled-back transaction,
    with the generic plan a prepared statement settles on after a few runs (the daemon's are
    prepared). The counters can still hold this connection's earlier, unreported work: the
    difference is the statement's."""
    tx = db.transaction()
    await tx.start()
    try:
        await db.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        before: int = await db.fetchval(READ, table)
        await db.execute(QUERIES[name], *args)
        after: int = await db.fetchval(READ, table)
        return after - before
    finally:
        await tx.rollback()


def _log_columns(webhook_id: int, event_id: int) -> list[list[Any]]:
    """complete_and_log's $1-$18 for one log row, laid out as the recorder lays them out."""
    row = LogRow(
        request_id=str(uuid.uuid4()),
        webhook_id=webhook_id,
        event_ids=[event_id],
        attempt=1,
        delivered_at=datetime.now(UTC),
        duration_ms=3,
        method="POST",
        url="http://127.0.0.1:9/h",
        request_headers="{}",
        request_body="{}",
        status_code=200,
        response_headers="{}",
        response_body="ok",
        success=True,
        error=None,
        note=None,
    )
    return _columns([row])


async def test_completing_reads_only_the_completed_row(db: asyncpg.Connection) -> None:
    webhook_id, event_id = await _statistically_empty_queue_with_rows(db)
    read = await _rows_read(
        db, "complete_and_log", *_log_columns(webhook_id, event_id), [webhook_id], [event_id]
    )
    assert read <= 10, f"{read} queue rows read to complete one"


async def test_releasing_and_failing_read_only_their_rows(db: asyncpg.Connection) -> None:
    webhook_id, event_id = await _statistically_empty_queue_with_rows(db)
    pairs = ([webhook_id], [event_id])
    for name, args in (
        ("release_failed", (*pairs, ["HTTP 500"])),
        ("mark_failed", (*pairs, ["HTTP 500"])),
        ("release_unsent", pairs),
    ):
        read = await _rows_read(db, name, *args)
        assert read <= 10, f"{name}: {read} queue rows read to change one"


async def test_the_statements_change_exactly_the_given_rows(db: asyncpg.Connection) -> None:
    webhook_id, event_id = await _statistically_empty_queue_with_rows(db)
    other = event_id - 1
    await db.execute(QUERIES["release_failed"], [webhook_id], [event_id], ["HTTP 500"])
    row = await db.fetchrow(
        "SELECT locked_until, last_error FROM webhook_queue "
        "WHERE webhook_id = $1 AND event_id = $2",
        webhook_id,
        event_id,
    )
    assert row is not None and row["locked_until"] is None and row["last_error"] == "HTTP 500"
    await db.execute(QUERIES["mark_failed"], [webhook_id], [other], ["gave up"])
    failed = await db.fetch("SELECT event_id FROM webhook_queue WHERE failed_at IS NOT NULL")
    assert [r["event_id"] for r in failed] == [other]
    await db.execute(
        QUERIES["complete_and_log"], *_log_columns(webhook_id, event_id), [webhook_id], [event_id]
    )
    assert await db.fetchval("SELECT count(*) FROM webhook_queue") == QUEUED - 1
    assert (
        await db.fetchval(
            "SELECT count(*) FROM webhook_queue WHERE webhook_id = $1 AND event_id = $2",
            webhook_id,
            event_id,
        )
        == 0
    )
    assert await db.fetchval("SELECT count(*) FROM webhook_logs") == 1


async def test_scheduling_reads_only_the_webhooks_it_is_about(db: asyncpg.Connection) -> None:
    """20,000 webhooks in a table whose statistics say it has pages but no rows: a claim, a pass,
    a settle and the endpoint-state updates each fetch the one webhook they are given."""
    insert = (
        "INSERT INTO webhooks (url, topics) "
        "SELECT 'http://127.0.0.1:9/h' || k, ARRAY['t' || k] FROM generate_series(1, 20000) k"
    )
    await db.execute(insert)
    await db.execute("DELETE FROM webhooks")
    await db.execute("ANALYZE webhooks")
    await db.execute(insert)
    webhook_id: int = await db.fetchval("SELECT min(id) FROM webhooks")
    await db.execute(
        "INSERT INTO webhook_events (topic, payload, webhook_id) "
        "SELECT 't', '{}', $1 FROM generate_series(1, 20)",
        webhook_id,
    )
    await db.execute("DELETE FROM webhook_arrivals")
    await db.execute("INSERT INTO webhook_arrivals (webhook_id) VALUES ($1)", webhook_id)
    one = [webhook_id]
    for name, args in (
        ("due_webhooks", (16,)),
        ("claim", (one, [10], [1_000_000], 100, 60.0)),
        ("settle_due", (one, [1], ["next"])),
        ("endpoint_outcomes", (one, [False], [1])),
        ("set_endpoint_state", (one, [1.0], [None])),
    ):
        read = await _rows_read(db, name, *args, table="webhooks")
        assert read <= 2, f"{name}: {read} webhooks read"
