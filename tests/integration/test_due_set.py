"""Scheduling reads only endpoints with due work (webhook_due), through the store as the
scheduler uses it: idle, paused, disabled, backing-off and fully leased endpoints are not read."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from engine.db.store import ClaimBudget, DueWebhook, Settlement, Store
from tests.conftest import wait_until
from tests.integration.test_delivery import add_event, add_webhook


@pytest.fixture
async def store(dsn: str) -> AsyncIterator[Store]:
    s = await Store.open(dsn, pool_size=2, synchronous_commit="on")
    yield s
    await s.close()


def ids(due: list[DueWebhook]) -> set[int]:
    return {d.webhook.id for d in due}


async def due_rows(db: asyncpg.Connection) -> dict[int, bool]:
    """webhook_due as {webhook_id: due now?}."""
    rows = await db.fetch("SELECT webhook_id, due_at <= now() AS now FROM webhook_due")
    return {r["webhook_id"]: r["now"] for r in rows}


async def claim_all(store: Store, due: list[DueWebhook], rows: int) -> dict[int, int]:
    budgets = [ClaimBudget(webhook=d.webhook, max_rows=rows, max_bytes=10**6) for d in due]
    claimed = await store.claim(budgets, lease_s=60)
    return {w: len(events) for w, events in claimed.items()}


async def test_only_endpoints_with_arrivals_are_due(db: asyncpg.Connection, store: Store) -> None:
    for i in range(200):
        await add_webhook(db, f"http://127.0.0.1:9/idle{i}", ["idle.*"])
    busy = [await add_webhook(db, f"http://127.0.0.1:9/b{i}", [f"busy{i}"]) for i in range(3)]
    for i in range(len(busy)):
        await add_event(db, f"busy{i}", {})
    due = await store.due_webhooks(10)
    assert ids(due) == set(busy)
    assert all(d.deliverable for d in due)
    assert await db.fetchval("SELECT count(*) FROM webhook_arrivals") == 0
    assert await store.due_webhooks(10) != []  # still due: nothing claimed yet


async def test_a_dry_endpoint_leaves_when_its_leases_are_done(
    db: asyncpg.Connection, store: Store
) -> None:
    hook = await add_webhook(db, "http://127.0.0.1:9/h", ["*"])
    for _ in range(3):
        await add_event(db, "order.created", {})
    due = await store.due_webhooks(10)
    assert await claim_all(store, due, 5) == {hook: 3}
    await store.settle_due([Settlement(webhook_id=hook, version=due[0].version, mode="dry")])
    # All its rows are leased: due again only when the lease would expire (a crash's work).
    assert await due_rows(db) == {hook: False}
    assert await store.due_webhooks(10) == []
    expiry = await db.fetchval("SELECT due_at FROM webhook_due")
    assert expiry == await db.fetchval("SELECT min(locked_until) FROM webhook_queue")

    await db.execute("DELETE FROM webhook_queue")  # delivered
    await db.execute("UPDATE webhook_due SET due_at = now()")  # the lease time has come
    due = await store.due_webhooks(10)
    assert await claim_all(store, due, 5) == {}
    await store.settle_due([Settlement(webhook_id=hook, version=due[0].version, mode="dry")])
    assert await due_rows(db) == {}


async def test_an_expired_lease_is_claimed_again(db: asyncpg.Connection, store: Store) -> None:
    """A daemon that claimed and died: its endpoint comes back when the lease expires."""
    hook = await add_webhook(db, "http://127.0.0.1:9/h", ["*"])
    await add_event(db, "order.created", {})
    due = await store.due_webhooks(10)
    budget = ClaimBudget(webhook=due[0].webhook, max_rows=5, max_bytes=10**6)
    assert len((await store.claim([budget], lease_s=0.3))[hook]) == 1
    await store.settle_due([Settlement(webhook_id=hook, version=due[0].version, mode="dry")])

    async def due_again() -> bool:
        return bool(await store.due_webhooks(10))

    await wait_until(due_again, within_s=5, what="the endpoint due once its lease expired")
    again = (await store.claim([budget], lease_s=60))[hook]
    assert [e.attempt for e in again] == [2]


async def test_an_arrival_during_a_pass_keeps_the_endpoint_due(
    db: asyncpg.Connection, store: Store
) -> None:
    """The pass saw version v and ran the endpoint dry; an event that arrived meanwhile bumped
    the version, so settling must not take the endpoint out."""
    hook = await add_webhook(db, "http://127.0.0.1:9/h", ["*"])
    await add_event(db, "order.created", {})
    due = await store.due_webhooks(10)
    assert await claim_all(store, due, 5) == {hook: 1}
    await add_event(db, "order.created", {})
    await store.due_webhooks(10)  # another daemon's pass moves the arrival
    await store.settle_due([Settlement(webhook_id=hook, version=due[0].version, mode="dry")])
    assert await due_rows(db) == {hook: True}
    assert await claim_all(store, await store.due_webhooks(10), 5) == {hook: 1}


async def test_paused_disabled_and_backing_off_endpoints_are_not_read(
    db: asyncpg.Connection, store: Store
) -> None:
    paused = await add_webhook(db, "http://127.0.0.1:9/p", ["*"], status="paused")
    disabled = await add_webhook(db, "http://127.0.0.1:9/d", ["*"], status="disabled")
    backing_off = await add_webhook(db, "http://127.0.0.1:9/b", ["*"])
    await db.execute(
        "UPDATE webhooks SET next_retry_after = now() + interval '1 hour' WHERE id = $1",
        backing_off,
    )
    await add_event(db, "order.created", {})
    assert await store.due_webhooks(10) == []
    assert await due_rows(db) == {backing_off: False}
    assert await db.fetchval("SELECT count(*) FROM webhook_queue") == 3  # all kept queued

    # Resuming wakes it; a retry time set back to NULL does too.
    await db.execute("UPDATE webhooks SET status = 'active' WHERE id = $1", paused)
    await db.execute("UPDATE webhooks SET next_retry_after = NULL WHERE id = $1", backing_off)
    assert ids(await store.due_webhooks(10)) == {paused, backing_off}
    assert disabled not in await due_rows(db)


async def test_an_endpoint_paused_while_due_is_taken_out(
    db: asyncpg.Connection, store: Store
) -> None:
    hook = await add_webhook(db, "http://127.0.0.1:9/h", ["*"])
    await add_event(db, "order.created", {})
    await store.due_webhooks(10)
    await db.execute("UPDATE webhooks SET status = 'paused' WHERE id = $1", hook)
    due = await store.due_webhooks(10)
    assert [(d.webhook.id, d.deliverable) for d in due] == [(hook, False)]
    await store.settle_due([Settlement(webhook_id=hook, version=due[0].version, mode="hold")])
    assert await due_rows(db) == {}


async def test_endpoints_with_rows_left_go_to_the_back_of_the_line(
    db: asyncpg.Connection, store: Store
) -> None:
    hooks = [await add_webhook(db, f"http://127.0.0.1:9/{i}", [f"t{i}"]) for i in range(4)]
    for i in range(4):
        for _ in range(3):
            await add_event(db, f"t{i}", {})
    served = await store.due_webhooks(2)
    assert len(served) == 2
    assert await claim_all(store, served, 1) == {d.webhook.id: 1 for d in served}
    await store.settle_due(
        [Settlement(webhook_id=d.webhook.id, version=d.version, mode="next") for d in served]
    )
    second = await store.due_webhooks(2)
    assert ids(second) == set(hooks) - ids(served), "the others are served next"


async def test_the_scheduling_tables_are_vacuumed_like_the_queue(
    db: asyncpg.Connection, store: Store
) -> None:
    hook = await add_webhook(db, "http://127.0.0.1:9/h", ["*"])
    for _ in range(3):
        await add_event(db, "order.created", {})
    for _ in range(20):  # each pass rewrites the due row
        due = await store.due_webhooks(10)
        await store.settle_due([Settlement(webhook_id=hook, version=due[0].version, mode="next")])
    assert {t.name for t in await store.churn_tuples()} == {
        "webhook_queue",
        "webhook_due",
        "webhook_arrivals",
    }
    for table in ("webhook_queue", "webhook_due", "webhook_arrivals"):
        await store.vacuum(table)
    assert (
        await db.fetchval(
            "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'webhook_due'"
        )
        >= 1
    )
    with pytest.raises(ValueError, match="webhooks is not one of"):
        await store.vacuum("webhooks")
