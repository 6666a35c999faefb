"""The real CLI as separate processes: init-db, several daemons, SIGTERM, kill -9."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections import Counter
from pathlib import Path

import asyncpg
from aiohttp import web

from tests import pg
from tests.conftest import wait_until
from tests.daemon_process import DaemonProcess, write_config
from tests.integration.test_delivery import add_events, add_webhook, queue_empty
from tests.receiver import Receiver


async def run_cli(*args: str) -> tuple[int, str]:
    daemon = await DaemonProcess.start(*args)
    code = await asyncio.wait_for(daemon.proc.wait(), 60)
    await daemon._reader
    return code, daemon.output()


async def test_init_db_creates_schema_and_is_idempotent(empty_dsn: str) -> None:
    for _ in range(2):
        code, output = await run_cli("init-db", "--dsn", empty_dsn)
        assert code == 0, output
    conn = await asyncpg.connect(empty_dsn)
    try:
        await conn.execute(
            "INSERT INTO webhooks (url, topics) VALUES ('http://127.0.0.1:9/', '{*}')"
        )
        await conn.execute("INSERT INTO webhook_events (topic) VALUES ('order.created')")
        code, output = await run_cli("init-db", "--dsn", empty_dsn)
        assert code == 0, output
        # Existing rows survive a re-run.
        assert await conn.fetchval("SELECT count(*) FROM webhook_queue") == 1
        assert await conn.fetchval("SELECT count(*) FROM webhooks") == 1
    finally:
        await conn.close()


async def test_init_db_creates_a_missing_database(admin_dsn: str) -> None:
    name = f"webhook_engine_test_{uuid.uuid4().hex[:12]}"
    try:
        code, output = await run_cli("init-db", "--dsn", pg.with_database(admin_dsn, name))
        assert code == 0, output
        conn = await asyncpg.connect(pg.with_database(admin_dsn, name))
        assert await conn.fetchval("SELECT to_regclass('webhooks') IS NOT NULL")
        await conn.close()
    finally:
        await pg.drop_database(admin_dsn, name)


async def test_run_refuses_a_database_without_schema(empty_dsn: str) -> None:
    code, output = await run_cli("run", "--dsn", empty_dsn)
    assert code == 2
    assert "init-db" in output


async def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[delivery]\nconcurency = 3\n")
    code, output = await run_cli("run", "--config", str(config))
    assert code == 2 and "concurency" in output


async def test_two_daemons_deliver_each_event_once(
    dsn: str,
    db: asyncpg.Connection,
    receiver: Receiver,
    daemons: list[DaemonProcess],
    tmp_path: Path,
) -> None:
    await add_webhook(db, receiver.url("/a"), ["*"])
    await add_webhook(db, receiver.url("/b"), ["order.*"], maximum_events=7)
    config = write_config(tmp_path / "c.toml", dsn, delivery={"per_endpoint_concurrency": 4})
    for _ in range(2):
        daemons.append(
            await DaemonProcess.start("--log-level", "debug", "run", "--config", str(config))
        )
    for daemon in daemons:
        await daemon.wait_for_event("listener.connected")
    for chunk in range(10):
        await db.execute(
            "INSERT INTO webhook_events (topic, payload) "
            "SELECT 'order.created', jsonb_build_object('n', g) "
            "FROM generate_series($1::int, $2::int) g",
            chunk * 300 + 1,
            chunk * 300 + 300,
        )
    await wait_until(lambda: queue_empty(db), within_s=60, what="queue drained")
    received: Counter[tuple[str, int]] = Counter()
    for request in receiver.requests:
        body = json.loads(request.body)
        for item in body if isinstance(body, list) else [body]:
            received[(request.path, item["id"])] += 1
    assert len(received) == 2 * 3000
    duplicates = {key: n for key, n in received.items() if n > 1}
    assert not duplicates, f"delivered more than once: {list(duplicates)[:5]}"
    # Both daemons really took part.
    assert all(d.count("delivery.sent") > 0 for d in daemons), [
        d.count("delivery.sent") for d in daemons
    ]
    for daemon in daemons:
        assert await daemon.stop() == 0, daemon.output()


async def test_sigterm_finishes_in_flight_and_releases_the_rest(
    dsn: str,
    db: asyncpg.Connection,
    receiver: Receiver,
    daemons: list[DaemonProcess],
    tmp_path: Path,
) -> None:
    release = asyncio.Event()

    async def held(_request: web.Request, _body: bytes) -> web.StreamResponse:
        await release.wait()
        return web.Response(text="ok")

    receiver.on("/slow", held)
    webhook_id = await add_webhook(db, receiver.url("/slow"), ["*"])
    await add_events(db, 20)
    config = write_config(tmp_path / "c.toml", dsn, delivery={"per_endpoint_concurrency": 4})
    daemon = await DaemonProcess.start("run", "--config", str(config))
    daemons.append(daemon)
    await receiver.wait_for(lambda: receiver.in_flight == 4, what="four requests in flight")
    daemon.proc.send_signal(signal.SIGTERM)
    await daemon.wait_for_event("scheduler.draining")
    release.set()  # the in-flight requests now finish, inside the grace period
    assert await daemon.stop() == 0, daemon.output()

    assert len(receiver.requests) == 4, "no new request may start after SIGTERM"
    logs = await db.fetch("SELECT * FROM webhook_logs WHERE webhook_id = $1", webhook_id)
    assert len(logs) == 4 and all(row["success"] for row in logs)
    left = await db.fetch("SELECT * FROM webhook_queue WHERE webhook_id = $1", webhook_id)
    assert len(left) == 16
    assert all(row["locked_until"] is None and row["attempts"] == 0 for row in left)

    # The next start continues where this one stopped.
    daemons.append(await DaemonProcess.start("run", "--config", str(config)))
    await wait_until(lambda: queue_empty(db), within_s=20, what="rest delivered")
    ids = Counter(json.loads(r.body)["id"] for r in receiver.requests)
    assert len(ids) == 20 and max(ids.values()) == 1


async def test_sigterm_past_the_grace_releases_sent_and_waiting_batches(
    dsn: str,
    db: asyncpg.Connection,
    receiver: Receiver,
    daemons: list[DaemonProcess],
    tmp_path: Path,
) -> None:
    """Requests that outlast the grace period are cut off; they and the batches claimed ahead,
    still waiting in their endpoint's lane, are all released at once, with no attempt counted,
    and delivered by the next start."""
    receiver.on("/hook", receiver.hang)
    webhook_id = await add_webhook(db, receiver.url("/hook"), ["*"])
    await add_events(db, 20)
    config = write_config(
        tmp_path / "c.toml",
        dsn,
        delivery={"per_endpoint_concurrency": 4},
        shutdown={"grace_s": 0.5},
    )
    daemon = await DaemonProcess.start("run", "--config", str(config))
    daemons.append(daemon)
    await receiver.wait_for(lambda: receiver.in_flight == 4, what="four requests in flight")
    leased = "SELECT count(*) FROM webhook_queue WHERE webhook_id = $1 AND locked_until > now()"
    assert await db.fetchval(leased, webhook_id) > 4, "batches claimed ahead of the slots"
    daemon.proc.send_signal(signal.SIGTERM)
    assert await daemon.stop() == 0, daemon.output()

    assert daemon.count("scheduler.grace_expired") == 1, daemon.output()
    assert daemon.count("delivery.interrupted") == 4, daemon.output()
    left = await db.fetch("SELECT * FROM webhook_queue WHERE webhook_id = $1", webhook_id)
    assert len(left) == 20
    assert all(row["locked_until"] is None and row["attempts"] == 0 for row in left)

    receiver.handlers.pop("/hook")  # answer 200 again
    daemons.append(await DaemonProcess.start("run", "--config", str(config)))
    await wait_until(lambda: queue_empty(db), within_s=20, what="all delivered after restart")
    delivered = await db.fetchval(
        "SELECT count(*) FROM webhook_logs WHERE webhook_id = $1 AND success", webhook_id
    )
    assert delivered == 20


async def test_killed_daemon_work_is_redelivered_after_its_lease(
    dsn: str,
    db: asyncpg.Connection,
    receiver: Receiver,
    daemons: list[DaemonProcess],
    tmp_path: Path,
) -> None:
    receiver.on("/hook", receiver.hang)
    webhook_id = await add_webhook(db, receiver.url("/hook"), ["*"])
    await add_events(db, 10)
    config = write_config(
        tmp_path / "c.toml",
        dsn,
        delivery={"per_endpoint_concurrency": 3, "total_timeout_s": 1.0, "lease_s": 2.0},
    )
    first = await DaemonProcess.start("run", "--config", str(config))
    daemons.append(first)
    await receiver.wait_for(lambda: receiver.in_flight == 3, what="three requests in flight")
    assert await first.stop(signal.SIGKILL) == -signal.SIGKILL
    leased = await db.fetchval(
        "SELECT count(*) FROM webhook_queue WHERE locked_until > now() AND webhook_id = $1",
        webhook_id,
    )
    # Three in flight, and three more claimed ahead (the scheduler's prefetch) waiting for a slot.
    assert leased == 6
    receiver.handlers.pop("/hook")  # the receiver answers again
    daemons.append(await DaemonProcess.start("run", "--config", str(config)))
    await wait_until(lambda: queue_empty(db), within_s=20, what="everything delivered")
    ids = Counter(json.loads(r.body)["id"] for r in receiver.requests)
    assert len(ids) == 10
    # Only what was in flight at the kill may arrive twice.
    assert sum(n - 1 for n in ids.values()) <= 3
