"""Tenants and intake: events reach only their own tenant's webhooks, found by an index look-up
of (tenant, pattern), never by reading every webhook; inserts never wait on each other."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import asyncpg
import pytest

from tests.conftest import RunningEngine, wait_until
from tests.integration.test_delivery import add_event, add_webhook, queue_empty
from tests.receiver import Receiver

EngineFactory = Callable[..., RunningEngine]


async def queued(db: asyncpg.Connection) -> set[tuple[int, int]]:
    rows = await db.fetch("SELECT webhook_id, event_id FROM webhook_queue")
    return {(r["webhook_id"], r["event_id"]) for r in rows}


async def test_two_tenants_on_the_same_topic_each_get_their_own_events(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    acme = await add_webhook(db, receiver.url("/acme"), ["order.created"], tenant="acme")
    globex = await add_webhook(db, receiver.url("/globex"), ["order.*"], tenant="globex")
    default = await add_webhook(db, receiver.url("/default"), ["*"])
    e_acme = await add_event(db, "order.created", {"n": 1}, tenant="acme")
    e_globex = await add_event(db, "order.created", {"n": 2}, tenant="globex")
    e_default = await add_event(db, "order.created", {"n": 3})
    await add_event(db, "order.created", {"n": 4}, tenant="initech")  # nobody subscribes

    assert await queued(db) == {(acme, e_acme), (globex, e_globex), (default, e_default)}
    engine()
    await wait_until(lambda: queue_empty(db), what="queue drained")

    def ids(path: str) -> list[int]:
        return [json.loads(r.body)["id"] for r in receiver.at(path)]

    assert ids("/acme") == [e_acme]
    assert ids("/globex") == [e_globex]
    assert ids("/default") == [e_default]


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("order", ["order", "*"]),
        ("order.created", ["order.created", "order.*", "*"]),
        ("a.b.c", ["a.b.c", "a.*", "a.b.*", "*"]),
        ("a.", ["a.", "a.*", "*"]),
        ("a..b", ["a..b", "a.*", "a..*", "*"]),
    ],
)
async def test_topic_patterns(db: asyncpg.Connection, topic: str, expected: list[str]) -> None:
    assert await db.fetchval("SELECT webhook_engine_topic_patterns($1)", topic) == expected


async def test_patterns_agree_with_the_matching_rule(db: asyncpg.Connection) -> None:
    """For every (pattern, topic) pair: the subscription look-up matches exactly when
    webhook_engine_topic_matches, the rule as written, says so."""
    topics = ["order", "order.created", "order.created.v2", "orders.created", "a.", "a..b", "x"]
    patterns = ["*", "order", "order.*", "order.created", "order.created.*", "orders.*", "a.*"]
    patterns += ["a..*", "a.", "x.*", "order.created.v2"]
    disagreements = await db.fetch(
        """
        SELECT p, t FROM unnest($1::text[]) AS p, unnest($2::text[]) AS t
        WHERE webhook_engine_topic_matches(ARRAY[p], t)
              IS DISTINCT FROM (p = ANY (webhook_engine_topic_patterns(t)))
        """,
        patterns,
        topics,
    )
    assert [tuple(r) for r in disagreements] == []


async def test_intake_never_reads_the_webhooks_table(db: asyncpg.Connection) -> None:
    """An untargeted insert looks up subscriptions by index; it does not scan webhooks."""
    for i in range(50):
        await add_webhook(db, f"http://127.0.0.1:9/{i}", [f"t{i}.*"], tenant=f"tenant{i % 5}")
    hook = await add_webhook(db, "http://127.0.0.1:9/x", ["t7.*"], tenant="tenant2")
    async with db.transaction():
        await db.execute(
            "INSERT INTO webhook_events (tenant, topic) "
            "SELECT 'tenant2', 't7.e' || g FROM generate_series(1, 20) g"
        )
        stats = await db.fetchrow(
            "SELECT seq_scan, coalesce(idx_scan, 0) AS idx_scan FROM pg_stat_xact_user_tables "
            "WHERE relname = 'webhooks'"
        )
        assert stats is not None
        assert (stats["seq_scan"], stats["idx_scan"]) == (0, 0)
    assert await db.fetchval("SELECT count(*) FROM webhook_queue WHERE webhook_id = $1", hook) == 20
    assert await db.fetchval("SELECT count(*) FROM webhook_queue") == 40  # webhook 7 and hook


async def test_intake_probes_subscriptions_by_tenant_and_pattern_in_one_big_tenant(
    db: asyncpg.Connection,
) -> None:
    """2,000 webhooks of one tenant, each on its own topic, and no statistics (never analyzed):
    a bulk insert probes (tenant, pattern) per event and pattern, and never reads the whole
    tenant's subscriptions per event (which a plain join planned: 1.45 ms per event at 10,000)."""
    await db.execute(
        "INSERT INTO webhooks (url, topics) "
        "SELECT 'http://127.0.0.1:9/' || k, ARRAY['order.' || k] FROM generate_series(0, 1999) k"
    )
    async with db.transaction():
        await db.execute(
            "INSERT INTO webhook_events (topic, payload) "
            "SELECT 'order.' || (g % 2000), '{}' FROM generate_series(1, 200) g"
        )
        stats = await db.fetchrow(
            "SELECT seq_tup_read, coalesce(idx_tup_fetch, 0) AS idx_tup_fetch "
            "FROM pg_stat_xact_user_tables WHERE relname = 'webhook_subscriptions'"
        )
    assert stats is not None
    # One subscription matches each event; the whole tenant per event would be 400,000 rows.
    assert stats["idx_tup_fetch"] <= 200 * 2
    assert stats["seq_tup_read"] == 0
    assert await db.fetchval("SELECT count(*) FROM webhook_queue") == 200


async def test_subscriptions_follow_topic_tenant_changes_and_deletes(
    db: asyncpg.Connection,
) -> None:
    hook = await add_webhook(db, "http://127.0.0.1:9/h", ["order.*"], tenant="acme")
    e1 = await add_event(db, "order.created", {}, tenant="acme")
    await db.execute("UPDATE webhooks SET topics = '{invoice.paid}' WHERE id = $1", hook)
    await add_event(db, "order.created", {}, tenant="acme")
    e3 = await add_event(db, "invoice.paid", {}, tenant="acme")
    await db.execute("UPDATE webhooks SET tenant = 'globex' WHERE id = $1", hook)
    await add_event(db, "invoice.paid", {}, tenant="acme")
    e5 = await add_event(db, "invoice.paid", {}, tenant="globex")
    assert await queued(db) == {(hook, e1), (hook, e3), (hook, e5)}
    await db.execute("DELETE FROM webhooks WHERE id = $1", hook)
    assert await db.fetchval("SELECT count(*) FROM webhook_subscriptions") == 0
    await add_event(db, "invoice.paid", {}, tenant="globex")
    assert await queued(db) == set()


async def test_a_webhook_listing_a_pattern_twice_gets_each_event_once(
    db: asyncpg.Connection,
) -> None:
    hook = await add_webhook(db, "http://127.0.0.1:9/h", ["order.*", "order.created", "*"])
    event = await add_event(db, "order.created", {})
    assert await queued(db) == {(hook, event)}


async def test_targeted_event_takes_its_webhooks_tenant(db: asyncpg.Connection) -> None:
    hook = await add_webhook(db, "http://127.0.0.1:9/h", [], tenant="acme")
    event = await add_event(db, "order.created", {}, webhook_id=hook)
    assert await db.fetchval("SELECT tenant FROM webhook_events WHERE id = $1", event) == "acme"
    same = await add_event(db, "order.created", {}, webhook_id=hook, tenant="acme")
    assert await queued(db) == {(hook, event), (hook, same)}


async def test_targeted_event_of_another_tenant_is_refused(db: asyncpg.Connection) -> None:
    hook = await add_webhook(db, "http://127.0.0.1:9/h", ["*"], tenant="acme")
    with pytest.raises(asyncpg.CheckViolationError) as caught:
        await add_event(db, "order.created", {}, webhook_id=hook, tenant="globex")
    assert str(caught.value) == (
        f'webhook_events.tenant "globex" is not the tenant of webhook {hook} ("acme")'
    )
    assert caught.value.column_name == "tenant"
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 0


async def test_two_applications_inserting_for_one_endpoint_never_wait(dsn: str) -> None:
    """Both transactions stay open while the other inserts: nothing they write is a shared row
    (a lock wait would hit the lock_timeout)."""
    setup = await asyncpg.connect(dsn)
    first = await asyncpg.connect(dsn, server_settings={"lock_timeout": "2s"})
    second = await asyncpg.connect(dsn, server_settings={"lock_timeout": "2s"})
    try:
        hook = await add_webhook(setup, "http://127.0.0.1:9/h", ["order.*"], tenant="acme")
        tx1, tx2 = first.transaction(), second.transaction()
        await tx1.start()
        await tx2.start()
        await add_event(first, "order.created", {"app": 1}, tenant="acme")
        await add_event(second, "order.created", {"app": 2}, tenant="acme")
        await add_event(first, "order.updated", {"app": 1}, webhook_id=hook)
        await asyncio.wait_for(add_event(second, "order.updated", {"app": 2}, webhook_id=hook), 5)
        await tx2.commit()
        await tx1.commit()
        assert await setup.fetchval("SELECT count(*) FROM webhook_queue") == 4
        assert await setup.fetchval("SELECT count(*) FROM webhook_arrivals") == 4
    finally:
        for conn in (setup, first, second):
            await conn.close()
