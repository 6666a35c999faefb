"""Every query the bench sends: the throw-away database, event inserts, the engine's tables."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg

from engine.store import init_schema

INSERT_CHUNK = 5_000

INSERT_MANY = """
INSERT INTO webhook_events (topic, payload)
SELECT 'order.created', jsonb_build_object('n', g, 'pad', repeat('x', 64))
FROM generate_series($1::int, $2::int) AS g
"""
INSERT_ONE = """
INSERT INTO webhook_events (topic, payload)
VALUES ('order.created', jsonb_build_object('n', $1::int, 'pad', repeat('x', 64)))
RETURNING id
"""

XACT_COMMIT = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
ADD_WEBHOOK = "INSERT INTO webhooks (url, topics, maximum_events) VALUES ($1, '{*}', 1)"


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def non_loopback_hosts(dsn: str) -> list[str]:
    """Hosts the DSN (or PGHOST) names that are neither loopback nor a Unix socket directory."""
    parts = urlsplit(dsn)
    hosts = [h for h in (parts.hostname or "").split(",") if h]
    hosts += [h for v in parse_qs(parts.query).get("host", []) for h in v.split(",") if h]
    if not hosts:
        hosts = [h for h in os.environ.get("PGHOST", "").split(",") if h]
    return [h for h in hosts if not (h.startswith("/") or h == "localhost" or _is_loopback(h))]


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@contextlib.asynccontextmanager
async def connect(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        yield conn
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def bench_database(admin_dsn: str) -> AsyncIterator[str]:
    """A fresh database holding the schema; yields its DSN and drops it on the way out."""
    name = f"webhook_engine_bench_{secrets.token_hex(6)}"
    async with connect(admin_dsn) as admin:
        await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        dsn = with_database(admin_dsn, name)
        async with connect(dsn) as conn:
            await init_schema(conn)
        yield dsn
    finally:
        await drop_database(admin_dsn, name)


async def drop_database(admin_dsn: str, name: str) -> None:
    try:
        async with connect(admin_dsn) as admin:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        print(f"WARNING: could not drop database {name}: {exc}", file=sys.stderr)


async def insert_bulk(conn: asyncpg.Connection, count: int) -> set[int]:
    """`count` events in multi-row INSERTs of at most INSERT_CHUNK rows; returns their ids."""
    for start in range(1, count + 1, INSERT_CHUNK):
        await conn.execute(INSERT_MANY, start, min(start + INSERT_CHUNK - 1, count))
    return set(await conn.fetchval("SELECT coalesce(array_agg(id), '{}') FROM webhook_events"))


async def add_webhook(conn: asyncpg.Connection, url: str) -> None:
    """One endpoint for every topic, one event per request."""
    await conn.execute(ADD_WEBHOOK, url)


async def insert_one(conn: asyncpg.Connection, n: int) -> int:
    """One event in its own transaction; returns its id."""
    return int(await conn.fetchval(INSERT_ONE, n))


async def insert_paced(
    conn: asyncpg.Connection, count: int, rate: float
) -> dict[int, tuple[float, float]]:
    """One event per transaction at `rate`/s; event id to (wall time just before the INSERT is
    sent, wall time just after it has committed)."""
    loop = asyncio.get_running_loop()
    committed: dict[int, tuple[float, float]] = {}
    started = loop.time()
    for n in range(count):
        delay = started + n / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        sent_at = time.time()
        event_id = await conn.fetchval(INSERT_ONE, n)
        committed[event_id] = (sent_at, time.time())
    return committed


@dataclass(frozen=True, kw_only=True)
class EngineRecords:
    queue_rows: int
    log_rows: int
    failed_log_rows: int
    xact_commit: int  # transactions committed in the bench database so far


async def xact_commits(dsn: str) -> int:
    async with connect(dsn) as conn:
        return int(await conn.fetchval(XACT_COMMIT))


async def engine_records(dsn: str) -> EngineRecords:
    async with connect(dsn) as conn:
        return EngineRecords(
            queue_rows=await conn.fetchval("SELECT count(*) FROM webhook_queue"),
            log_rows=await conn.fetchval("SELECT count(*) FROM webhook_logs"),
            failed_log_rows=await conn.fetchval(
                "SELECT count(*) FROM webhook_logs WHERE NOT success"
            ),
            xact_commit=await conn.fetchval(XACT_COMMIT),
        )


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    version: str
    fsync: str
    synchronous_commit: str


async def server_settings(dsn: str) -> ServerSettings:
    """The server's version and the settings that decide what a commit costs."""
    async with connect(dsn) as conn:
        return ServerSettings(
            version=await conn.fetchval("SHOW server_version"),
            fsync=await conn.fetchval("SHOW fsync"),
            synchronous_commit=await conn.fetchval("SHOW synchronous_commit"),
        )
