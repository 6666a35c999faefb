"""Management API bench: POST /v1/events in batches; delivery throughput of `run --burst` with
the API off, and on in the same process under GET load; then, with 100,000 webhooks in the
table, GET /v1/webhooks/{id} at a steady rate and pages of GET /v1/webhooks.

    .venv/bin/python bench/api.py [--webhooks 100000] [--rate 500] [--seconds 10]

A throw-away database `webhook_engine_bench_<random>` is created on the admin DSN's server and
dropped at the end. The API is the real CLI (`webhook-engine api`, or `run` with [api] listen)
in its own process on 127.0.0.1; this process only sends requests. Deliveries go to the bench's
receiver process on 127.0.0.1; every other webhook points at 127.0.0.1:9 and gets no daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from bench import BenchError, run_main
from bench.daemon import running_daemon, write_config
from bench.database import bench_database, connect, resolve_admin_dsn
from bench.receiver import receiver_process
from bench.report import machine_facts, print_run, section
from bench.tally import percentile
from engine.api.io import encode_cursor
from engine.db.api_store import ApiStore

SEED_WEBHOOKS = """
INSERT INTO webhooks (url, name, topics)
SELECT 'http://127.0.0.1:9/hook/' || g, 'bench ' || g, ARRAY['other.' || g]
FROM generate_series(1, $1::int) AS g
"""
SEEDED_IDS = "SELECT min(id), max(id) FROM webhooks WHERE name LIKE 'bench %'"
# The events phase: one webhook takes every order.* event (one queue row per event); the
# seeded ones subscribe to other topics.
SUBSCRIBER = "INSERT INTO webhooks (url, topics) VALUES ('http://127.0.0.1:9/orders', '{order.*}')"
# The delivery phase: the receiver's webhook, and events targeted at it.
TARGET = "INSERT INTO webhooks (url, topics) VALUES ($1, '{}') RETURNING id"
INSERT_TARGETED = """
INSERT INTO webhook_events (topic, payload, webhook_id)
SELECT 'order.created', jsonb_build_object('n', g, 'pad', repeat('x', 64)), $2::bigint
FROM generate_series(1, $1::int) AS g
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def api_process(dsn: str) -> AsyncIterator[str]:
    """`webhook-engine api` on a free loopback port; yields its base URL once it is healthy."""
    url = f"http://127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "engine.cli", "--log-level", "warning", "api"]
    command += ["--dsn", dsn, "--listen", url.removeprefix("http://")]
    process = await asyncio.create_subprocess_exec(*command)
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(url + "/v1/health") as answer:
                        if answer.status == 200:
                            break
                if process.returncode is not None or time.monotonic() > deadline:
                    raise BenchError("the API process did not become healthy")
                await asyncio.sleep(0.1)
        yield url
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)


def latency_line(name: str, seconds: Sequence[float], wall_s: float, errors: int) -> str:
    ms = sorted(s * 1000 for s in seconds)
    return (
        f"{name:<34} n={len(ms):<6} p50={percentile(ms, 50):6.2f} ms  "
        f"p99={percentile(ms, 99):6.2f} ms  max={ms[-1] if ms else 0:7.2f} ms  "
        f"rate={len(ms) / wall_s:8.1f}/s  errors={errors}"
    )


async def paced(
    rate: float, seconds: float, call: Callable[[], Awaitable[bool]]
) -> tuple[str, int]:
    """Start `call` at a fixed rate (open loop) for `seconds`; latencies from each start."""
    latencies: list[float] = []
    errors = 0

    async def one() -> None:
        nonlocal errors
        started = time.perf_counter()
        ok = await call()
        latencies.append(time.perf_counter() - started)
        errors += not ok

    tasks: list[asyncio.Task[None]] = []
    begin = time.perf_counter()
    for n in range(int(rate * seconds)):
        delay = begin + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - begin
    return latency_line(f"at {rate:g} requests/s", latencies, wall, errors), errors


async def closed(
    requests: int, workers: int, call: Callable[[], Awaitable[bool]]
) -> tuple[str, int]:
    """`workers` clients, each sending its next request when the last one answered."""
    latencies: list[float] = []
    errors = 0
    left = requests

    async def worker() -> None:
        nonlocal errors, left
        while left > 0:
            left -= 1
            started = time.perf_counter()
            ok = await call()
            latencies.append(time.perf_counter() - started)
            errors += not ok

    begin = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    wall = time.perf_counter() - begin
    return latency_line(f"{workers} client(s)", latencies, wall, errors), errors


async def run_bench(args: argparse.Namespace) -> bool:
    async with contextlib.AsyncExitStack() as stack:
        dsn = await stack.enter_async_context(bench_database(args.dsn))
        store = await ApiStore.open(dsn, pool_size=1)
        _, key = await store.create_key(tenant=None, read_only=False, name="bench")
        await store.close()
        facts = await machine_facts(dsn)
        print_run("webhook-engine API bench", facts, args)
        url = await stack.enter_async_context(api_process(dsn))
        print(f"api                `webhook-engine api` at {url} (separate process)", flush=True)
        session = await stack.enter_async_context(
            aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {key}"},
                connector=aiohttp.TCPConnector(limit=64),
            )
        )
        # The webhooks first: intake and reads are measured beside all of them (the delivery
        # phase, last, deletes them).
        async with connect(dsn) as conn:
            started = time.perf_counter()
            await conn.execute(SEED_WEBHOOKS, args.webhooks)
            await conn.execute("ANALYZE webhooks")
            seeded_s = time.perf_counter() - started
            ids = await conn.fetchrow(SEEDED_IDS)
            assert ids is not None
            low, top = ids
        print(f"\nseeded {args.webhooks} webhooks in {seeded_s:.1f} s (one INSERT)")
        ok = await phase_events(session, url, dsn, args)
        ok = await phase_reads(session, url, int(low), int(top), args) and ok
        ok = await phase_delivery(dsn, key, args) and ok
        return ok


async def phase_events(
    session: aiohttp.ClientSession, url: str, dsn: str, args: argparse.Namespace
) -> bool:
    section(f"POST /v1/events, batches of {args.batch}, {args.workers} clients")
    async with connect(dsn) as conn:
        await conn.execute(SUBSCRIBER)
    counter = 0

    async def post_batch() -> bool:
        nonlocal counter
        counter += 1
        batch = [
            {"topic": "order.created", "payload": {"n": counter * args.batch + i, "pad": "x" * 64}}
            for i in range(args.batch)
        ]
        async with session.post(url + "/v1/events", json=batch) as answer:
            await answer.read()
            return answer.status == 201

    await closed(20, args.workers, post_batch)  # warm-up: connections, prepared statements
    batches = args.events // args.batch
    begin = time.perf_counter()
    line, errors = await closed(batches, args.workers, post_batch)
    wall = time.perf_counter() - begin
    print(line)
    rate = batches * args.batch / wall
    async with connect(dsn) as conn:
        events = await conn.fetchval("SELECT count(*) FROM webhook_events")
        queued = await conn.fetchval("SELECT count(*) FROM webhook_queue")
    print(f"events/s            {rate:,.0f}  (target >= 20,000)")
    print(f"check               {events} events stored, {queued} queue rows (1 subscriber)")
    return not errors and bool(events == queued == (batches + 20) * args.batch)


async def phase_delivery(dsn: str, key: str, args: argparse.Namespace) -> bool:
    """`run --burst` from a full queue of targeted events: API off, then API on (same process)
    answering GET /v1/webhooks/{id} at --rate meanwhile."""
    section(f"delivery: `run --burst`, {args.deliveries} queued events, API off / on under load")
    async with contextlib.AsyncExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wh-api-bench-")))
        rx = await stack.enter_async_context(receiver_process())
        async with connect(dsn) as conn:
            await conn.execute("DELETE FROM webhooks")  # the events phase's queue goes with it
            hook = await conn.fetchval(TARGET, rx.hook_url)
        ok = True
        for api_on in (False, True):
            async with connect(dsn) as conn:
                await conn.execute(INSERT_TARGETED, args.deliveries, hook)
            await rx.reset()
            listen = f"127.0.0.1:{free_port()}" if api_on else ""
            config = write_config(workdir / "run.toml", dsn, args, api_listen=listen)
            load = None
            done = asyncio.Event()
            async with running_daemon(config, burst=True, log=workdir / "run.log") as daemon:
                if api_on:
                    load = asyncio.create_task(
                        api_load(f"http://{listen}", key, hook, args.rate, done)
                    )
                exit_code = await daemon.wait()
                exited_at = time.time()
                done.set()
            wall = exited_at - daemon.started_at
            received = len({event_id for _, event_id in await rx.records()})
            answered = await load if load else None
            print(
                f"{'API on, GET load' if api_on else 'API off':<18} {args.deliveries / wall:8,.0f} "
                f"events/s  ({args.deliveries} in {wall:.2f} s incl. start, exit {exit_code}, "
                f"{received} received)"
            )
            if answered:
                print(f"  API meanwhile     {answered}")
            ok = ok and exit_code == 0 and received == args.deliveries
        return ok


async def api_load(url: str, key: str, webhook_id: int, rate: float, done: asyncio.Event) -> str:
    """GET /v1/webhooks/{id} at `rate` (open loop) until `done`; refused connections while the
    daemon starts are not counted."""
    latencies: list[float] = []
    errors = 0

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        started = time.perf_counter()
        try:
            async with session.get(f"{url}/v1/webhooks/{webhook_id}") as answer:
                await answer.read()
                # A 503 is expected from requests still queued when the burst ends: the
                # daemon closes the API's pool as it exits.
                errors += answer.status != 200
        except aiohttp.ClientError:
            return  # not listening yet, or already gone
        latencies.append(time.perf_counter() - started)

    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as session:
        tasks: list[asyncio.Task[None]] = []
        begin = time.perf_counter()
        n = 0
        while not done.is_set():
            n += 1
            delay = begin + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(session)))
        await asyncio.gather(*tasks)
    return latency_line("GET /v1/webhooks/{id}", latencies, time.perf_counter() - begin, errors)


async def phase_reads(
    session: aiohttp.ClientSession, url: str, low: int, top: int, args: argparse.Namespace
) -> bool:
    async def get_one() -> bool:
        async with session.get(f"{url}/v1/webhooks/{random.randint(low, top)}") as answer:
            await answer.read()
            return answer.status == 200

    async def get_page() -> bool:
        cursor = encode_cursor({"after": random.randint(low - 1, top - 100)})
        async with session.get(url + "/v1/webhooks", params={"cursor": cursor}) as answer:
            body = await answer.json()
            return answer.status == 200 and len(body["data"]) == 100

    section("GET /v1/webhooks/{id} (with health), random ids")
    await closed(200, 4, get_one)  # warm-up
    results = [await paced(args.rate, args.seconds, get_one)]
    print(results[-1][0])
    section(f"GET /v1/webhooks?limit=100 at a random cursor, of {args.webhooks} webhooks")
    print("(target p99 <= 25 ms)")
    await closed(50, 1, get_page)
    for workers in (1, 4):
        results.append(await closed(args.pages, workers, get_page))
        print(results[-1][0])
    return not any(errors for _, errors in results)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--webhooks", type=int, default=100_000)
    p.add_argument("--rate", type=float, default=500.0, help="GET /v1/webhooks/{id} per second")
    p.add_argument("--seconds", type=float, default=10.0, help="length of the paced phase")
    p.add_argument("--pages", type=int, default=1000, help="list requests per client setting")
    p.add_argument("--events", type=int, default=50_000, help="events in the POST phase")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--workers", type=int, default=8, help="concurrent POST clients")
    p.add_argument("--deliveries", type=int, default=20_000, help="events per delivery run")
    p.add_argument("--concurrency", type=int, default=64, help="daemon: delivery.concurrency")
    p.add_argument("--per-endpoint", type=int, default=64, help="daemon: per-endpoint limit")
    p.add_argument("--synchronous-commit", default="on", choices=("on", "off"))
    p.add_argument("--phase-timeout", type=float, default=300.0)
    p.add_argument("--dsn", help="admin DSN (default: $WEBHOOK_ENGINE_TEST_DSN, else local)")
    args = p.parse_args(argv)
    resolve_admin_dsn(p, args)
    if args.webhooks < 100:
        p.error("--webhooks must be at least 100 (a page)")
    if min(args.pages, args.events, args.batch, args.workers, args.seconds, args.rate) <= 0:
        p.error("counts, --seconds and --rate must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(run_bench(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
