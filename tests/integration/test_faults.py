"""Faults: rude receivers, Postgres connections killed, a daemon killed with -9 under load."""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from datetime import timedelta
from pathlib import Path

import asyncpg
import structlog
from aiohttp import web

from tests.conftest import wait_until
from tests.daemon_process import DaemonProcess, write_config
from tests.integration.test_delivery import (
    EngineFactory,
    add_event,
    add_events,
    add_webhook,
    queue_empty,
)
from tests.receiver import Receiver

ONE_GB = 1024**3


def ids_received(receiver: Receiver, path: str) -> Counter[int]:
    return Counter(json.loads(r.body)["id"] for r in receiver.at(path))


async def dribble(request: web.Request, _body: bytes) -> web.StreamResponse:
    """Answers one byte per second."""
    response = web.StreamResponse(status=200)
    response.content_length = 1000
    await response.prepare(request)
    for _ in range(1000):
        await response.write(b"x")
        await asyncio.sleep(1)  # the rudeness under test, not synchronisation
    return response


async def huge(request: web.Request, _body: bytes) -> web.StreamResponse:
    """A 1 GB body, generated as it is sent (never held in memory); status from the path."""
    response = web.StreamResponse(status=500 if request.path.endswith("error") else 200)
    response.content_length = ONE_GB
    await response.prepare(request)
    chunk = b"y" * (1024 * 1024)
    try:
        for _ in range(1024):
            await response.write(chunk)
    except (ConnectionError, RuntimeError):
        pass  # the client stopped reading: expected
    return response


async def reset(request: web.Request, _body: bytes) -> web.StreamResponse:
    """Drops the connection without answering."""
    assert request.transport is not None
    request.transport.abort()
    return web.Response(status=500)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


async def test_rude_receivers_fail_cleanly_and_do_not_slow_healthy_ones(
    dsn: str,
    db: asyncpg.Connection,
    receiver: Receiver,
    daemons: list[DaemonProcess],
    tmp_path: Path,
) -> None:
    receiver.on("/hang", receiver.hang)
    receiver.on("/dribble", dribble)
    receiver.on("/huge", huge)
    receiver.on("/huge-error", huge)
    receiver.on("/reset", reset)
    hooks = {}
    for path in ("/hang", "/dribble", "/huge", "/huge-error", "/reset", "/ok"):
        hooks[path] = await add_webhook(db, receiver.url(path), ["*"], retry=False)
    await add_events(db, 300)
    config = write_config(
        tmp_path / "c.toml",
        dsn,
        delivery={"total_timeout_s": 8.0, "lease_s": 20.0, "per_endpoint_concurrency": 8},
    )
    daemon = await DaemonProcess.start("run", "--config", str(config))
    daemons.append(daemon)

    async def healthy_done() -> bool:
        left = await db.fetchval(
            "SELECT count(*) FROM webhook_queue WHERE webhook_id = $1", hooks["/ok"]
        )
        return bool(left == 0)

    async def slow_ones_logged() -> bool:
        count = await db.fetchval(
            "SELECT count(DISTINCT webhook_id) FROM webhook_logs WHERE webhook_id = ANY($1)",
            [hooks["/hang"], hooks["/dribble"]],
        )
        return bool(count == 2)

    await wait_until(healthy_done, within_s=30, what="healthy endpoint drained")
    await wait_until(slow_ones_logged, within_s=30, what="slow endpoints timed out")
    rss = peak_rss_mib(daemon.proc.pid)
    assert await daemon.stop() == 0, daemon.output()

    def first_log(path: str) -> asyncpg.Record:
        return next(r for r in rows if r["webhook_id"] == hooks[path])

    rows = await db.fetch("SELECT * FROM webhook_logs ORDER BY delivered_at")
    healthy_last = max(r["delivered_at"] for r in rows if r["webhook_id"] == hooks["/ok"])
    hang = first_log("/hang")
    # The healthy endpoint's 300 events all went while the hanging request was still waiting.
    assert healthy_last < hang["delivered_at"] + timedelta(seconds=7.5)
    assert "timeout" in hang["error"] and 7900 <= hang["duration_ms"] < 12000
    slow = first_log("/dribble")
    assert "timeout" in slow["error"] and slow["duration_ms"] < 12000
    # A 2xx with a 1 GB body is a delivery; the same body with a 500 is a failure. Either way
    # only the logged first 100,000 characters are read.
    big = first_log("/huge")
    assert big["success"] and big["status_code"] == 200
    assert big["response_body"] is not None and len(big["response_body"]) == 100_000
    big_error = first_log("/huge-error")
    assert not big_error["success"] and big_error["error"] == "HTTP 500"
    assert len(big_error["response_body"]) == 100_000
    broken = first_log("/reset")
    assert not broken["success"] and broken["status_code"] is None
    assert "closed" in broken["error"] or "reset" in broken["error"].lower()
    assert rss < 200, f"daemon peak RSS {rss:.0f} MiB while a 1 GB body came in"


async def test_survives_postgres_connections_being_killed(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    await add_webhook(db, receiver.url("/hook"), ["*"])
    await add_events(db, 3000)
    with structlog.testing.capture_logs() as logs:
        engine(delivery={"poll_interval_s": 60.0, "per_endpoint_concurrency": 8})
        await receiver.wait_for(lambda: len(receiver.requests) >= 500, what="500 delivered")
        killed = await db.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name LIKE 'webhook-engine%'"
        )
        assert killed >= 2, "expected the pool and the listener connection"
        await wait_until(lambda: queue_empty(db), within_s=60, what="queue drained")
        received = ids_received(receiver, "/hook")
        assert len(received) == 3000, "an event was lost"
        # At-least-once: only what was in flight or unrecorded at the kill may come twice.
        assert sum(n - 1 for n in received.values()) <= 64

        async def relistening() -> bool:
            return sum(1 for e in logs if e["event"] == "listener.connected") >= 2

        await wait_until(relistening, what="LISTEN re-established")
        # NOTIFY works again (polling is 60 s here).
        late = await add_event(db, "order.created", {"late": True})
        await receiver.wait_for(
            lambda: late in ids_received(receiver, "/hook"), within_s=5, what="late event"
        )
    events = {e["event"] for e in logs}
    assert "listener.connection_lost" in events
    assert events & {"scheduler.database_error", "recorder.flush_failed"}


async def test_kill_9_under_load_loses_nothing(
    dsn: str,
    db: asyncpg.Connection,
    receiver: Receiver,
    daemons: list[DaemonProcess],
    tmp_path: Path,
) -> None:
    await add_webhook(db, receiver.url("/hook"), ["*"])
    await add_events(db, 10000)
    config = write_config(
        tmp_path / "c.toml",
        dsn,
        delivery={"per_endpoint_concurrency": 16, "lease_s": 3.0, "total_timeout_s": 2.0},
    )
    first = await DaemonProcess.start("run", "--config", str(config))
    daemons.append(first)
    await receiver.wait_for(lambda: len(receiver.requests) >= 3000, within_s=60, what="3000 sent")
    assert await first.stop(signal.SIGKILL) == -signal.SIGKILL
    leased = await db.fetchval("SELECT count(*) FROM webhook_queue WHERE locked_until > now()")
    sent_before = len(receiver.requests)
    assert sent_before < 10000, "the kill came too late to test anything"

    daemons.append(await DaemonProcess.start("run", "--config", str(config)))
    await wait_until(lambda: queue_empty(db), within_s=120, what="everything delivered")
    received = ids_received(receiver, "/hook")
    assert len(received) == 10000, "an event was lost"
    duplicates = sum(n - 1 for n in received.values())
    # Only rows leased at the kill (in flight, or sent but not yet recorded) may arrive twice.
    assert duplicates <= leased, (duplicates, leased)


async def test_sigterm_under_heavy_load_then_restart(
    dsn: str,
    db: asyncpg.Connection,
    receiver: Receiver,
    daemons: list[DaemonProcess],
    tmp_path: Path,
) -> None:
    await add_webhook(db, receiver.url("/a"), ["*"])
    await add_webhook(db, receiver.url("/b"), ["*"], maximum_events=10)
    await add_events(db, 5000)
    config = write_config(tmp_path / "c.toml", dsn, delivery={"per_endpoint_concurrency": 32})
    first = await DaemonProcess.start("run", "--config", str(config))
    daemons.append(first)
    await receiver.wait_for(lambda: len(receiver.requests) >= 1000, within_s=60, what="load")
    assert await first.stop(signal.SIGTERM) == 0, first.output()
    assert await db.fetchval("SELECT count(*) FROM webhook_queue WHERE locked_until > now()") == 0
    left = await db.fetchval("SELECT count(*) FROM webhook_queue")
    assert left > 0, "the stop came too late to test anything"

    daemons.append(await DaemonProcess.start("run", "--config", str(config)))
    await wait_until(lambda: queue_empty(db), within_s=120, what="everything delivered")
    per_path: dict[str, Counter[int]] = {"/a": Counter(), "/b": Counter()}
    for request in receiver.requests:
        body = json.loads(request.body)
        for item in body if isinstance(body, list) else [body]:
            per_path[request.path][item["id"]] += 1
    for counts in per_path.values():
        assert len(counts) == 5000, "an event was lost"
        # A graceful stop finishes and records what is in flight: nothing is sent twice.
        assert max(counts.values()) == 1
