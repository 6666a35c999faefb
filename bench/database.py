"""Every query the bench sends: the throw-away database, event inserts, the engine's tables."""

from __future__ import annotations

import argparse
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

from engine.db.store import init_schema

INSERT_CHUNK = 5_000

# Event n has topic 'order.<n mod endpoints>': each endpoint k subscribes to 'order.k' alone.
INSERT_MANY = """
INSERT INTO webhook_events (topic, payload)
SELECT 'order.' || (g % $3::int), jsonb_build_object('n', g, 'pad', repeat('x', 64))
FROM generate_series($1::int, $2::int) AS g
"""
INSERT_ONE = """
INSERT INTO webhook_events (topic, payload)
VALUES ('order.0', jsonb_build_object('n', $1::int, 'pad', repeat('x', 64)))
RETURNING id
"""

XACT_COMMIT = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
ADD_WEBHOOKS = """
INSERT INTO webhooks (url, topics, maximum_events)
SELECT $1 || '?w=' || k, ARRAY['order.' || k], $3::int FROM generate_series(0, $2::int - 1) AS k
"""

# Targeted events (webhook_id set): only that webhook gets them, whatever its topics.
INSERT_TARGETED = """
INSERT INTO webhook_events (topic, payload, webhook_id)
SELECT 'order.created', jsonb_build_object('n', g, 'pad', repeat('x', 64)), $3::bigint
FROM generate_series($1::int, $2::int) AS g
"""
ADD_TARGETED_WEBHOOK = """
INSERT INTO webhooks (name, url, topics, status, maximum_events)
VALUES ($1, $2, '{}', $3, 1)
RETURNING id
"""
QUEUE_STATE = """
SELECT count(*) AS rows,
       count(*) FILTER (WHERE attempts = 0 AND locked_until IS NULL AND failed_at IS NULL)
           AS untouched
FROM webhook_queue WHERE webhook_id = $1
"""
QUEUE_EVENT_IDS = (
    "SELECT coalesce(array_agg(event_id), '{}') FROM webhook_queue WHERE webhook_id = $1"
)
DELETE_QUEUED = "DELETE FROM webhook_queue WHERE webhook_id = $1"
# What the planner believes about webhook_queue.webhook_id (nothing before the first ANALYZE).
WEBHOOK_ID_STATS = """
SELECT n_distinct, most_common_vals::text AS values, most_common_freqs::text AS freqs
FROM pg_stats
WHERE schemaname = current_schema() AND tablename = 'webhook_queue' AND attname = 'webhook_id'
"""
SIZES = """
SELECT pg_database_size(current_database()) AS database,
       pg_total_relation_size('webhook_queue') AS queue_total,
       pg_indexes_size('webhook_queue') AS queue_indexes,
       pg_total_relation_size('webhook_events') AS events_total,
       s.n_live_tup AS queue_live, s.n_dead_tup AS queue_dead,
       s.vacuum_count + s.autovacuum_count AS queue_vacuums
FROM pg_stat_user_tables AS s WHERE s.relid = 'webhook_queue'::regclass
"""


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


async def insert_bulk(conn: asyncpg.Connection, count: int, endpoints: int = 1) -> set[int]:
    """`count` events in multi-row INSERTs of at most INSERT_CHUNK rows, spread round-robin
    over `endpoints` endpoints (see add_webhooks); returns their ids."""
    for start in range(1, count + 1, INSERT_CHUNK):
        await conn.execute(INSERT_MANY, start, min(start + INSERT_CHUNK - 1, count), endpoints)
    return set(await conn.fetchval("SELECT coalesce(array_agg(id), '{}') FROM webhook_events"))


async def add_webhooks(
    conn: asyncpg.Connection, url: str, endpoints: int = 1, maximum_events: int = 1
) -> None:
    """Endpoints 0 .. endpoints-1 (`url?w=k`), endpoint k subscribed to topic 'order.k'."""
    await conn.execute(ADD_WEBHOOKS, url, endpoints, maximum_events)


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


async def add_targeted_webhook(conn: asyncpg.Connection, name: str, url: str, status: str) -> int:
    """An endpoint with topics '{}': it gets only events inserted with its webhook_id."""
    return int(await conn.fetchval(ADD_TARGETED_WEBHOOK, name, url, status))


async def insert_targeted(
    conn: asyncpg.Connection, webhook_id: int, count: int, chunk: int
) -> list[float]:
    """`count` events for `webhook_id`, one INSERT ... SELECT (and transaction) per `chunk`;
    returns each chunk's seconds."""
    seconds: list[float] = []
    for start in range(1, count + 1, chunk):
        started = time.perf_counter()
        await conn.execute(INSERT_TARGETED, start, min(start + chunk - 1, count), webhook_id)
        seconds.append(time.perf_counter() - started)
    return seconds


@dataclass(frozen=True, kw_only=True)
class QueueState:
    rows: int
    untouched: int  # never attempted, not leased, not failed


async def queue_state(conn: asyncpg.Connection, webhook_id: int) -> QueueState:
    row = await conn.fetchrow(QUEUE_STATE, webhook_id)
    assert row is not None
    return QueueState(rows=row["rows"], untouched=row["untouched"])


async def queued_event_ids(conn: asyncpg.Connection, webhook_id: int) -> set[int]:
    return set(await conn.fetchval(QUEUE_EVENT_IDS, webhook_id))


async def delete_queued(conn: asyncpg.Connection, webhook_id: int) -> int:
    """Drop a webhook's queue rows, as delivery would; returns how many."""
    return int((await conn.execute(DELETE_QUEUED, webhook_id)).split()[-1])


async def vacuum_analyze(conn: asyncpg.Connection, tables: list[str]) -> float:
    """VACUUM ANALYZE each table (outside any transaction); returns the seconds taken."""
    started = time.perf_counter()
    for table in tables:
        await conn.execute(f"VACUUM ANALYZE {table}")
    return time.perf_counter() - started


async def explain(
    conn: asyncpg.Connection, sql: str, *args: object, rollback: bool = False
) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS) lines; `rollback` runs it in a transaction rolled back after,
    for statements that write (EXPLAIN ANALYZE executes them)."""
    query = f"EXPLAIN (ANALYZE, BUFFERS) {sql}"
    if not rollback:
        return [row[0] for row in await conn.fetch(query, *args)]
    tx = conn.transaction()
    await tx.start()
    try:
        return [row[0] for row in await conn.fetch(query, *args)]
    finally:
        await tx.rollback()


async def webhook_id_stats(conn: asyncpg.Connection) -> str:
    """The planner's statistics on webhook_queue.webhook_id, as one line."""
    row = await conn.fetchrow(WEBHOOK_ID_STATS)
    if row is None:
        return "none (never analyzed)"
    return (
        f"n_distinct {row['n_distinct']:g}, most common values {row['values']} "
        f"with frequencies {row['freqs']}"
    )


@dataclass(frozen=True, kw_only=True)
class Sizes:
    database: int  # bytes
    queue_total: int  # webhook_queue with its indexes
    queue_indexes: int
    events_total: int
    queue_live: int  # the statistics collector's counts (approximate)
    queue_dead: int
    queue_vacuums: int  # VACUUMs of webhook_queue so far, by anyone


async def sizes(conn: asyncpg.Connection) -> Sizes:
    row = await conn.fetchrow(SIZES)
    assert row is not None
    return Sizes(**dict(row))


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
    autovacuum: str


async def server_settings(dsn: str) -> ServerSettings:
    """The server's version and the settings that decide what a commit costs."""
    async with connect(dsn) as conn:
        return ServerSettings(
            version=await conn.fetchval("SHOW server_version"),
            fsync=await conn.fetchval("SHOW fsync"),
            synchronous_commit=await conn.fetchval("SHOW synchronous_commit"),
            autovacuum=await conn.fetchval("SHOW autovacuum"),
        )


DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def resolve_admin_dsn(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--dsn, else $WEBHOOK_ENGINE_TEST_DSN, else the local server; refuse non-loopback hosts
    and a non-positive --phase-timeout (both benches take these flags)."""
    args.dsn = args.dsn or os.environ.get("WEBHOOK_ENGINE_TEST_DSN") or DEFAULT_ADMIN_DSN
    if args.phase_timeout <= 0:
        parser.error("--phase-timeout must be positive")
    if remote := non_loopback_hosts(args.dsn):
        parser.error(f"only loopback Postgres is allowed, the DSN names {', '.join(remote)}")
