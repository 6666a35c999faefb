"""/metrics, /healthz and /readyz of a real daemon, scraped over HTTP and parsed with
prometheus_client's own parser, while it delivers to a real receiver."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
import structlog
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from engine.db.ops import OpsReader
from engine.db.store import Store
from engine.ops.health import Health
from engine.ops.metrics import Metrics
from tests.conftest import RunningEngine, make_config, wait_until
from tests.integration.test_delivery import (
    EngineFactory,
    add_event,
    add_events,
    add_webhook,
    queue_empty,
)
from tests.receiver import Receiver

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def start_with_metrics(engine: EngineFactory, **sections: Any) -> tuple[RunningEngine, str]:
    """A daemon serving its metrics on a free port; returns it and its base URL."""
    metrics = {"listen": "127.0.0.1:0", **sections.pop("metrics", {})}
    with structlog.testing.capture_logs() as logs:
        running = engine(metrics=metrics, **sections)

        async def listening() -> bool:
            return any(e["event"] == "ops.listening" for e in logs)

        await wait_until(listening, what="metrics endpoint listening")
    port = next(e["port"] for e in logs if e["event"] == "ops.listening")
    assert port > 0
    return running, f"http://127.0.0.1:{port}"


async def scrape(base_url: str) -> Samples:
    async with aiohttp.ClientSession() as session, session.get(f"{base_url}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def get_json(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        body: dict[str, Any] = await resp.json()
        return resp.status, body


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_counters_move_with_deliveries_and_failures(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    async def down(_request: web.Request, _body: bytes) -> web.StreamResponse:
        return web.Response(status=500)

    receiver.on("/down", down)
    await add_webhook(db, receiver.url("/ok"), ["order.*"])
    await add_webhook(db, receiver.url("/down"), ["order.*"], retry=False)
    await add_webhook(db, f"http://127.0.0.1:{closed_port()}/", ["order.*"], retry=False)
    _running, base = await start_with_metrics(engine)

    before = await scrape(base)
    assert value(before, "webhook_engine_requests_total", outcome="success") == 0
    assert value(before, "webhook_engine_endpoints", state="active") == 3
    assert ("webhook_engine_requests_in_flight", frozenset()) in before

    await add_events(db, 4)

    async def settled() -> bool:
        pending = await db.fetchval("SELECT count(*) FROM webhook_queue WHERE failed_at IS NULL")
        return bool(pending == 0)

    await wait_until(settled, what="every event delivered or given up")

    async def counted() -> bool:
        s = await scrape(base)
        return value(s, "webhook_engine_requests_total", outcome="connection_error") == 4

    await wait_until(counted, what="all requests counted")
    after = await scrape(base)
    assert value(after, "webhook_engine_requests_total", outcome="success") == 4
    assert value(after, "webhook_engine_requests_total", outcome="http_error") == 4
    assert value(after, "webhook_engine_events_delivered_total") == 4
    assert value(after, "webhook_engine_events_given_up_total") == 8
    assert value(after, "webhook_engine_request_duration_seconds_count") == 12
    assert value(after, "webhook_engine_request_duration_seconds_bucket", le="+Inf") == 12
    assert value(after, "webhook_engine_recorder_flush_duration_seconds_count") >= 1
    assert value(after, "webhook_engine_database_errors_total") == 0

    # The queue gauges are read at most once a second: wait for a fresh read.
    async def failed_rows_seen() -> bool:
        s = await scrape(base)
        return value(s, "webhook_engine_queue_events", state="failed") == 8

    # retry = false: the 8 failed deliveries are kept as failed queue rows.
    await wait_until(failed_rows_seen, what="failed queue rows in the gauge")
    assert value(await scrape(base), "webhook_engine_queue_events", state="pending") == 0


async def test_gauges_read_queue_and_endpoint_states(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    async def down(_request: web.Request, _body: bytes) -> web.StreamResponse:
        return web.Response(status=503)

    receiver.on("/down", down)
    await add_webhook(db, receiver.url("/held"), ["*"], status="paused")
    await add_webhook(db, receiver.url("/off"), ["none"], status="disabled")
    await add_webhook(db, receiver.url("/down"), ["*"])
    await add_events(db, 5)
    _running, base = await start_with_metrics(
        engine, retry={"schedule_s": [60.0]}, metrics={"listen": "127.0.0.1:0"}
    )

    async def backing_off() -> bool:
        s = await scrape(base)
        return value(s, "webhook_engine_endpoints", state="backing_off") == 1

    await wait_until(backing_off, what="the failing endpoint counted as backing off")
    s = await scrape(base)
    assert value(s, "webhook_engine_endpoints", state="paused") == 1
    assert value(s, "webhook_engine_endpoints", state="disabled") == 1
    assert value(s, "webhook_engine_endpoints", state="active") == 0
    # 5 held for the paused endpoint, 5 waiting out the failing one's backoff.
    assert value(s, "webhook_engine_queue_events", state="pending") == 10
    # Nothing is due: paused and backing off endpoints do not count as lag.
    assert value(s, "webhook_engine_queue_lag_seconds") == 0


async def test_lag_is_the_age_of_the_oldest_due_event(dsn: str, db: asyncpg.Connection) -> None:
    webhook = await add_webhook(db, "http://127.0.0.1:9/", ["*"])
    paused = await add_webhook(db, "http://127.0.0.1:9/p", ["*"], status="paused")
    insert = "INSERT INTO webhook_events (topic, webhook_id, created_at) VALUES ($1, $2, $3)"
    await db.execute(insert, "old", paused, datetime(2020, 1, 1, tzinfo=UTC))
    await db.execute(insert, "a", webhook, datetime.now(UTC) - timedelta(hours=1))
    await add_event(db, "b", {}, webhook_id=webhook)
    store = await Store.open(dsn, pool_size=1, synchronous_commit="on")
    try:
        # No daemon has taken the arrivals in yet (as when none runs): they count.
        age = await OpsReader(store.pool).oldest_due_age_s()
        assert age is not None and 3600 <= age < 3700
        # Taken into the due set by a scheduling pass: still the same lag.
        await store.due_webhooks(10)
        assert await db.fetchval("SELECT count(*) FROM webhook_arrivals") == 0
        moved = await OpsReader(store.pool).oldest_due_age_s()
    finally:
        await store.close()
    assert moved is not None and 3600 <= moved < 3700


async def test_database_errors_are_counted(dsn: str, admin_dsn: str) -> None:
    metrics = Metrics()
    store = await Store.open(
        dsn, pool_size=1, synchronous_commit="on", on_error=metrics.database_error
    )
    try:
        with pytest.raises(asyncpg.DivisionByZeroError):
            await store.pool.fetchval("SELECT 1 / 0")
        await wait_until(lambda: errors_counted(metrics, 1), what="failed statement counted")
    finally:
        await store.close()
    unreachable = f"postgresql://postgres@127.0.0.1:{closed_port()}/postgres"
    with pytest.raises(OSError):
        await Store.open(
            unreachable, pool_size=1, synchronous_commit="on", on_error=metrics.database_error
        )
    assert await errors_counted(metrics, 2)


async def errors_counted(metrics: Metrics, expected: int) -> bool:
    return metrics.registry.get_sample_value("webhook_engine_database_errors_total") == expected


async def test_health_and_readiness(
    dsn: str, db: asyncpg.Connection, engine: EngineFactory
) -> None:
    _running, base = await start_with_metrics(engine)
    status, body = await get_json(f"{base}/healthz")
    assert status == 200 and body["status"] == "ok"
    assert {"scheduler", "recorder", "listener", "ops"} <= set(body["loops"])

    async def ready() -> bool:
        code, _ = await get_json(f"{base}/readyz")
        return code == 200

    await wait_until(ready, what="ready once the listener is connected")
    _, body = await get_json(f"{base}/readyz")
    assert body == {"status": "ok", "database": "connected", "listener": "connected"}


async def test_not_ready_without_database_or_listener(dsn: str) -> None:
    store = await Store.open(dsn, pool_size=1, synchronous_commit="on")
    reader = OpsReader(store.pool)
    check = await Health(reader, listener_connected=lambda: False).readiness()
    assert not check.ok and check.detail["listener"] == "disconnected"
    assert check.detail["database"] == "connected"
    await store.close()
    check = await Health(reader, listener_connected=lambda: True).readiness()
    assert not check.ok and check.detail["database"].startswith("unreachable")
    assert not Health(reader, listener_connected=lambda: True).liveness().ok  # no loops


async def test_per_tenant_labels(db: asyncpg.Connection, engine: EngineFactory) -> None:
    await add_webhook(db, "http://127.0.0.1:9/a", ["x"], tenant="acme", status="paused")
    await add_webhook(db, "http://127.0.0.1:9/b", ["x"], tenant="globex")
    _running, base = await start_with_metrics(engine, metrics={"per_tenant": True})
    s = await scrape(base)
    assert value(s, "webhook_engine_endpoints", state="paused", tenant="acme") == 1
    assert value(s, "webhook_engine_endpoints", state="active", tenant="globex") == 1
    assert not any(name == "webhook_engine_endpoints" and not dict(labels) for name, labels in s)


async def test_request_counters_carry_the_tenant(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    await add_webhook(db, receiver.url("/t"), ["*"], tenant="acme")
    _running, base = await start_with_metrics(engine, metrics={"per_tenant": True})
    await db.execute("INSERT INTO webhook_events (tenant, topic) VALUES ('acme', 'x')")
    await wait_until(lambda: queue_empty(db), what="delivered")

    async def counted() -> bool:
        s = await scrape(base)
        return value(s, "webhook_engine_requests_total", outcome="success", tenant="acme") == 1

    await wait_until(counted, within_s=3, what="success counted for tenant acme")


async def test_a_taken_metrics_port_stops_the_daemon_with_a_clear_line(dsn: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with structlog.testing.capture_logs() as logs:
            running = RunningEngine(make_config(dsn, metrics={"listen": f"127.0.0.1:{port}"}))
            assert await asyncio.wait_for(running.task, 30) == 1
    failed = next(e for e in logs if e["event"] == "ops.listen_failed")
    assert failed["port"] == port and failed["host"] == "127.0.0.1"


async def test_in_flight_counts_requests_being_sent_not_batches_claimed_ahead(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    receiver.on("/hang", receiver.hang)
    await add_webhook(db, receiver.url("/hang"), ["*"])
    await add_events(db, 10)
    _running, base = await start_with_metrics(engine, delivery={"per_endpoint_concurrency": 2})
    await receiver.wait_for(lambda: receiver.in_flight == 2, what="two requests hanging")
    leased = await db.fetchval("SELECT count(*) FROM webhook_queue WHERE locked_until > now()")
    assert leased == 4, "two sending and two claimed ahead, waiting for a slot"
    assert value(await scrape(base), "webhook_engine_requests_in_flight") == 2
