"""Scale bench: what intake and scheduling cost as the number of webhooks grows, and delivery
to many small endpoints against one big one.

    .venv/bin/python bench/scale.py [--webhooks 100000] [--tenants 10000]

In one run, on two throw-away databases (dropped at the end, also on error or Ctrl-C), `small`
and `large` (--webhooks idle active webhooks over --tenants tenants), measured alternately so
that a noisy machine slows both alike:

1. intake, `small` at 10 webhooks: one-row INSERTs into webhook_events (round trip, commit
   included) and 20,000-row INSERTs; every event matches exactly one webhook;
2. one scheduling pass (due_webhooks, claim one row each, settle_due, as the scheduler does),
   `small` at 100 webhooks; 10 endpoints of each have work;
3. delivery in `large`, `run --burst`, maximum_events = 1, the same concurrency for both:
   --small-endpoints endpoints with 5 events each, then one endpoint with as many events.

Each ratio compares figures of this run only. Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
import orjson

from bench import BenchError, run_main
from bench.daemon import log_summary, running_daemon, write_config
from bench.database import bench_database, connect, resolve_admin_dsn
from bench.phases import bounded
from bench.receiver import ReceiverClient, receiver_process
from bench.report import machine_facts, print_run, section
from bench.tally import percentile, tally
from engine.db.store import ClaimBudget, Settlement, Store

SINGLE_INSERTS = 2_000
BULK_ROWS = 20_000
BULK_REPEATS = 3
PASSES = 300
WORKING = 10  # endpoints with work during the pass timing
EVENTS_PER_SMALL = 5

# Webhook i: tenant 't<i mod tenants>', topics '{topic<i div tenants>.*}': every (tenant, topic)
# pair names exactly one webhook.
ADD_WEBHOOKS = """
INSERT INTO webhooks (tenant, url, topics)
SELECT 't' || (i % $3::int), 'http://127.0.0.1:9/idle',
       ARRAY['topic' || (i / $3::int) || '.*']
FROM generate_series($1::int, $2::int - 1) AS i
"""
INSERT_ONE = """
INSERT INTO webhook_events (tenant, topic, payload)
VALUES ('t' || ($1::int % $3::int), 'topic' || ($1::int % $2::int) || '.created', '{"n": 1}')
"""
INSERT_BULK = """
INSERT INTO webhook_events (tenant, topic, payload)
SELECT 't' || (g % $3::int), 'topic' || (g % $2::int) || '.created', jsonb_build_object('n', g)
FROM generate_series(1, $1::int) AS g
"""
CLEAR = "TRUNCATE webhook_queue, webhook_arrivals, webhook_due, webhook_events"


@dataclass(frozen=True, kw_only=True)
class Intake:
    webhooks: int
    one_row_ms: list[float]  # ascending
    bulk_rows_per_s: float
    queued_per_event: float


@dataclass(frozen=True, kw_only=True)
class Passes:
    webhooks: int
    pass_ms: list[float]  # ascending


@dataclass(frozen=True, kw_only=True)
class Delivery:
    endpoints: int
    events: int
    eps: float
    exit_code: int
    missing: int
    duplicates: int
    log: list[str]


async def grow(conn: asyncpg.Connection, to: int, tenants: int) -> float:
    """Add idle webhooks up to `to` in all; returns the seconds it took."""
    have = int(await conn.fetchval("SELECT count(*) FROM webhooks WHERE url LIKE '%/idle'"))
    started = time.perf_counter()
    for start in range(have, to, 10_000):
        await conn.execute(ADD_WEBHOOKS, start, min(start + 10_000, to), tenants)
    await conn.execute("ANALYZE webhooks")
    await conn.execute("ANALYZE webhook_subscriptions")
    return time.perf_counter() - started


@dataclass(frozen=True, kw_only=True)
class Database:
    """One of the two databases measured side by side."""

    dsn: str
    conn: asyncpg.Connection
    webhooks: int
    tenants: int

    @property
    def topics(self) -> int:
        return max(1, self.webhooks // self.tenants)


async def measure_intake(dbs: Sequence[Database]) -> list[Intake]:
    """One-row inserts alternate between the databases (a noisy machine slows both alike),
    then BULK_REPEATS bulk inserts each, alternating too; the median bulk rate counts."""
    times: list[list[float]] = [[] for _ in dbs]
    for db in dbs:
        await db.conn.execute(CLEAR)
    for n in range(SINGLE_INSERTS):
        for db, spent in zip(dbs, times, strict=True):
            started = time.perf_counter()
            await db.conn.execute(INSERT_ONE, n, db.topics, db.tenants)
            spent.append((time.perf_counter() - started) * 1000)
    queued = [int(await db.conn.fetchval("SELECT count(*) FROM webhook_queue")) for db in dbs]
    rates: list[list[float]] = [[] for _ in dbs]
    for _ in range(BULK_REPEATS):
        for db, rate in zip(dbs, rates, strict=True):
            await db.conn.execute(CLEAR)
            started = time.perf_counter()
            await db.conn.execute(INSERT_BULK, BULK_ROWS, db.topics, db.tenants)
            rate.append(BULK_ROWS / (time.perf_counter() - started))
            if await db.conn.fetchval("SELECT count(*) FROM webhook_queue") != BULK_ROWS:
                raise BenchError("intake: the bulk insert did not queue one row per event")
    for db in dbs:
        await db.conn.execute(CLEAR)
    return [
        Intake(
            webhooks=db.webhooks,
            one_row_ms=sorted(spent),
            bulk_rows_per_s=statistics.median(rate),
            queued_per_event=q / SINGLE_INSERTS,
        )
        for db, spent, rate, q in zip(dbs, times, rates, queued, strict=True)
    ]


async def measure_passes(dbs: Sequence[Database]) -> list[Passes]:
    """Time PASSES scheduler passes in each database, alternating, while WORKING endpoints of
    each have events queued."""
    stores: list[Store] = []
    working: list[list[int]] = []
    for db in dbs:
        await db.conn.execute(CLEAR)
        ids = [
            int(r["id"])
            for r in await db.conn.fetch("SELECT id FROM webhooks ORDER BY id LIMIT $1", WORKING)
        ]
        await db.conn.execute(
            "INSERT INTO webhook_events (webhook_id, topic) "
            "SELECT w, 'work' FROM unnest($1::bigint[]) AS w, generate_series(1, $2::int)",
            ids,
            PASSES + 10,
        )
        working.append(ids)
        stores.append(await Store.open(db.dsn, pool_size=2, synchronous_commit="on"))
    times: list[list[float]] = [[] for _ in dbs]
    try:
        for i in range(PASSES):
            for store, ids, spent in zip(stores, working, times, strict=True):
                started = time.perf_counter()
                claimed = await one_pass(store)
                spent.append((time.perf_counter() - started) * 1000)
                if sorted(claimed) != sorted(ids):
                    raise BenchError(f"pass {i}: claimed for {sorted(claimed)}, expected {ids}")
    finally:
        for store in stores:
            await store.close()
    for db in dbs:
        await db.conn.execute(CLEAR)
    return [
        Passes(webhooks=db.webhooks, pass_ms=sorted(spent))
        for db, spent in zip(dbs, times, strict=True)
    ]


async def one_pass(store: Store) -> list[int]:
    """What the scheduler does in a pass: due endpoints, one row each, settled."""
    due = await store.due_webhooks(64)
    budgets = [ClaimBudget(webhook=d.webhook, max_rows=1, max_bytes=10**6) for d in due]
    claimed = await store.claim(budgets, lease_s=600)
    await store.settle_due(
        [Settlement(webhook_id=d.webhook.id, version=d.version, mode="next") for d in due]
    )
    return list(claimed)


async def measure_delivery(
    dsn: str, rx: ReceiverClient, config: Path, workdir: Path, endpoints: int, events: int
) -> Delivery:
    """`endpoints` webhooks on the receiver sharing `events` events evenly; `run --burst`."""
    async with connect(dsn) as conn:
        await conn.execute(CLEAR)
        await conn.execute("DELETE FROM webhooks WHERE tenant = 'delivery'")
        await conn.execute(
            "INSERT INTO webhooks (tenant, url, topics) "
            "SELECT 'delivery', $1 || '?w=' || k, ARRAY['d' || k] "
            "FROM generate_series(0, $2::int - 1) AS k",
            rx.hook_url,
            endpoints,
        )
        await conn.execute(
            "INSERT INTO webhook_events (tenant, topic, payload) "
            "SELECT 'delivery', 'd' || (g % $2::int), jsonb_build_object('n', g) "
            "FROM generate_series(1, $1::int) AS g",
            events,
            endpoints,
        )
        expected = set(await conn.fetchval("SELECT array_agg(id) FROM webhook_events"))
    await rx.reset()
    log = workdir / f"delivery-{endpoints}.log"
    async with running_daemon(config, burst=True, log=log) as daemon:
        exit_code = await daemon.wait()
    seen = tally(await rx.records(), expected)
    return Delivery(
        endpoints=endpoints,
        events=events,
        eps=seen.distinct / (seen.last_at - daemon.started_at),
        exit_code=exit_code,
        missing=seen.missing,
        duplicates=seen.duplicates,
        log=log_summary(log),
    )


def print_intake(i: Intake) -> None:
    one = i.one_row_ms
    print(f"{i.webhooks:,} webhooks")
    print(
        f"  one-row insert   p50 {percentile(one, 50):.3f} ms, p99 {percentile(one, 99):.3f} ms, "
        f"mean {statistics.fmean(one):.3f} ms ({SINGLE_INSERTS} inserts, "
        f"{i.queued_per_event:.2f} queue rows each)"
    )
    print(
        f"  bulk insert      {i.bulk_rows_per_s:,.0f} rows/s (median of {BULK_REPEATS} statements "
        f"of {BULK_ROWS:,} rows)"
    )


def print_passes(p: Passes) -> None:
    ms = p.pass_ms
    print(
        f"one pass           p50 {percentile(ms, 50):.3f} ms, p99 {percentile(ms, 99):.3f} ms "
        f"({PASSES} passes, {WORKING} of {p.webhooks:,} webhooks with work)"
    )


def print_delivery(d: Delivery) -> None:
    print(
        f"{d.endpoints:>6,} endpoint(s)  {d.events:,} events: {d.eps:,.0f} events/s, "
        f"exit {d.exit_code}, {d.missing} missing, {d.duplicates} duplicates"
    )
    print("\n".join(d.log), flush=True)


async def run_bench(args: argparse.Namespace) -> bool:
    async with contextlib.AsyncExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wh-scale-")))
        small_dsn = await stack.enter_async_context(bench_database(args.dsn))
        large_dsn = await stack.enter_async_context(bench_database(args.dsn))
        rx = await stack.enter_async_context(receiver_process())
        config = write_config(workdir / "scale.toml", large_dsn, args)
        print_run("webhook-engine scale bench", await machine_facts(large_dsn), args)
        small_conn = await stack.enter_async_context(connect(small_dsn))
        large_conn = await stack.enter_async_context(connect(large_dsn))
        section("setup: two databases, measured side by side (alternating)")
        took = await grow(large_conn, args.webhooks, args.tenants)
        print(
            f"large              {args.webhooks:,} webhooks over {args.tenants:,} tenants, "
            f"created in {took:.1f} s"
        )
        await grow(small_conn, 10, 1)
        print("small              10 webhooks (intake), then 100 over 10 tenants (passes)")
        small = Database(dsn=small_dsn, conn=small_conn, webhooks=10, tenants=1)
        large = Database(
            dsn=large_dsn, conn=large_conn, webhooks=args.webhooks, tenants=args.tenants
        )
        section("intake: every event matches exactly one webhook")
        small_in, large_in = await measure_intake([small, large])
        for intake in (small_in, large_in):
            print_intake(intake)
        section(f"scheduling: {WORKING} endpoints with work")
        await grow(small_conn, 100, 10)
        small = Database(dsn=small_dsn, conn=small_conn, webhooks=100, tenants=10)
        small_pass, large_pass = await measure_passes([small, large])
        for passes in (small_pass, large_pass):
            print_passes(passes)
        events = args.small_endpoints * EVENTS_PER_SMALL
        section(
            f"delivery beside {args.webhooks:,} idle webhooks: maximum_events 1, "
            f"concurrency {args.concurrency} (global and per endpoint) for both"
        )
        t = args.phase_timeout
        many = await bounded(
            "many endpoints",
            measure_delivery(large_dsn, rx, config, workdir, args.small_endpoints, events),
            t,
            rx,
        )
        print_delivery(many)
        one = await bounded(
            "one endpoint", measure_delivery(large_dsn, rx, config, workdir, 1, events), t, rx
        )
        print_delivery(one)
        return report(small_in, large_in, small_pass, large_pass, many, one)


def report(
    small_in: Intake,
    large_in: Intake,
    small_pass: Passes,
    large_pass: Passes,
    many: Delivery,
    one: Delivery,
) -> bool:
    ratios = {
        "one_row_insert_p50": (
            percentile(large_in.one_row_ms, 50) / percentile(small_in.one_row_ms, 50),
            "<=",
            1.5,
        ),
        "bulk_insert_rate": (large_in.bulk_rows_per_s / small_in.bulk_rows_per_s, ">=", 0.7),
        "pass_p50": (
            percentile(large_pass.pass_ms, 50) / percentile(small_pass.pass_ms, 50),
            "<=",
            2.0,
        ),
        "many_endpoints_vs_one": (many.eps / one.eps, ">=", 0.8),
    }
    section("ratios (large / small, many / one) against the targets")
    met: dict[str, bool] = {}
    for name, (value, op, target) in ratios.items():
        met[name] = value <= target if op == "<=" else value >= target
        print(f"{name:<24} {value:.2f} (target {op} {target}) {'met' if met[name] else 'MISSED'}")
    checks = {
        "every event delivered once": not (many.missing or many.duplicates)
        and not (one.missing or one.duplicates),
        "burst daemons exited 0": many.exit_code == one.exit_code == 0,
        "one queue row per event": small_in.queued_per_event == large_in.queued_per_event == 1,
    }
    failed = [name for name, ok in checks.items() if not ok]
    print(f"checks             {'FAILED: ' + '; '.join(failed) if failed else 'all passed'}")
    line = {name: round(value, 3) for name, (value, _, _) in ratios.items()}
    print(orjson.dumps(line | {"targets_met": met, "failed_checks": failed}).decode())
    return not failed


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--webhooks", type=int, default=100_000)
    p.add_argument("--tenants", type=int, default=10_000)
    p.add_argument("--small-endpoints", type=int, default=10_000, help="endpoints of 5 events")
    p.add_argument("--concurrency", type=int, default=64, help="global and per endpoint")
    p.add_argument("--phase-timeout", type=float, default=600.0, help="seconds per delivery")
    p.add_argument("--dsn", help="admin DSN (default: $WEBHOOK_ENGINE_TEST_DSN, else local)")
    args = p.parse_args(argv)
    resolve_admin_dsn(p, args)
    if args.webhooks < 1000 or args.tenants < 10 or args.webhooks % args.tenants:
        p.error("--webhooks must be at least 1000 and a multiple of --tenants (at least 10)")
    args.per_endpoint = args.concurrency
    args.synchronous_commit = "on"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(run_bench(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
