"""Log lines operators read: endpoints named with their url (no credentials), the database the
daemon cannot reach (no password), and a summary line that is written even when idle."""

from __future__ import annotations

import socket

import asyncpg
import structlog
from aiohttp import web

from tests.conftest import wait_until
from tests.integration.test_delivery import EngineFactory, add_events, add_webhook
from tests.receiver import Receiver


async def test_endpoint_lines_carry_url_without_credentials(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    async def down(_request: web.Request, _body: bytes) -> web.StreamResponse:
        return web.Response(status=500)

    receiver.on("/down", down)
    url = f"http://alice:s3cret@127.0.0.1:{receiver.port}/down?token=t0ken&x=1"
    webhook_id = await add_webhook(db, url, ["*"], name="billing")
    await add_events(db, 1)
    with structlog.testing.capture_logs() as logs:
        engine(retry={"schedule_s": [600.0]})

        async def backing_off() -> bool:
            return any(e["event"] == "endpoint.backing_off" for e in logs)

        await wait_until(backing_off, what="endpoint.backing_off logged")
    lines = [e for e in logs if e["event"] in ("delivery.failed", "endpoint.backing_off")]
    assert {e["event"] for e in lines} == {"delivery.failed", "endpoint.backing_off"}
    for line in lines:
        assert line["webhook_id"] == webhook_id
        assert line["url"] == f"http://127.0.0.1:{receiver.port}/down?token=********&x=1"
        assert "webhook_name" in line
        assert "s3cret" not in str(line) and "t0ken" not in str(line)


async def test_endpoint_lines_carry_the_name(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    async def down(_request: web.Request, _body: bytes) -> web.StreamResponse:
        return web.Response(status=500)

    receiver.on("/down", down)
    await add_webhook(db, receiver.url("/down"), ["*"], name="billing")
    await add_events(db, 1)
    with structlog.testing.capture_logs() as logs:
        engine(retry={"schedule_s": [600.0]})

        async def failed() -> bool:
            return any(e["event"] == "delivery.failed" for e in logs)

        await wait_until(failed, what="delivery.failed logged")
    assert next(e for e in logs if e["event"] == "delivery.failed")["webhook_name"] == "billing"


async def test_database_unreachable_names_host_port_database(engine: EngineFactory) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dsn = f"postgresql://app:hunter2@127.0.0.1:{port}/orders"
    with structlog.testing.capture_logs() as logs:
        engine(database={"dsn": dsn})

        async def logged() -> bool:
            return any(e["event"] == "daemon.database_unreachable" for e in logs)

        await wait_until(logged, what="daemon.database_unreachable logged")
    line = next(e for e in logs if e["event"] == "daemon.database_unreachable")
    assert (line["host"], line["port"], line["database"]) == ("127.0.0.1", str(port), "orders")
    assert "hunter2" not in str(line)


async def test_summary_is_written_when_idle_with_pending_and_in_flight(
    db: asyncpg.Connection, engine: EngineFactory
) -> None:
    await add_webhook(db, "http://127.0.0.1:9/held", ["*"], status="paused")
    await add_events(db, 3)
    with structlog.testing.capture_logs() as logs:
        engine(recorder={"summary_interval_s": 0.1})

        async def two_summaries() -> bool:
            return sum(1 for e in logs if e["event"] == "delivery.summary") >= 2

        await wait_until(two_summaries, what="summary lines while idle")
    summary = next(e for e in logs if e["event"] == "delivery.summary")
    assert summary["requests"] == 0 and summary["in_flight"] == 0
    assert summary["pending_events"] == 3 and summary["failed_events"] == 0
    assert summary["events_per_s"] == 0
