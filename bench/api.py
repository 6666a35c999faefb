"""Management API bench: POST /v1/events in batches, GET /v1/webhooks/{id} at a steady rate, and
pages of GET /v1/webhooks, with 100,000 webhooks in the table.

    .venv/bin/python bench/api.py [--webhooks 100000] [--rate 500] [--seconds 10]

A throw-away database `webhook_engine_bench_<random>` is created on the admin DSN's server and
dropped at the end. The API is the real CLI (`webhook-engine api`) in its own process on
127.0.0.1; this process only sends requests. No daemon runs, so nothing is delivered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from bench import BenchError, run_main
from bench.database import bench_database, connect, resolve_admin_dsn
from bench.report import machine_facts, print_run, section
from bench.tally import percentile
from engine.api.io import encode_cursor
from engine.db.api_store import ApiStore

SEED_WEBHOOKS = """
INSERT INTO webhooks (url, name, topics)
SELECT 'http://127.0.0.1:9/hook/' || g, 'bench ' || g, ARRAY['other.' || g]
FROM generate_series(1, $1::int) AS g
"""
# The events phase: one webhook takes every order.* event (one queue row per event).
SUBSCRIBER = "INSERT INTO webhooks (url, topics) VALUES ('http://127.0.0.1:9/orders', '{order.*}')"


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


async def paced(rate: float, seconds: float, call: Callable[[], Awaitable[bool]]) -> str:
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
    return latency_line(f"at {rate:g} requests/s", latencies, time.perf_counter() - begin, errors)


async def closed(requests: int, workers: int, call: Callable[[], Awaitable[bool]]) -> str:
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
    return latency_line(f"{workers} client(s)", latencies, time.perf_counter() - begin, errors)


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
        ok = await phase_events(session, url, dsn, args)
        async with connect(dsn) as conn:
            started = time.perf_counter()
            await conn.execute(SEED_WEBHOOKS, args.webhooks)
            await conn.execute("ANALYZE webhooks")
            seeded_s = time.perf_counter() - started
            top = int(await conn.fetchval("SELECT max(id) FROM webhooks"))
        print(f"\nseeded {args.webhooks} webhooks in {seeded_s:.1f} s (one INSERT)")
        ok = await phase_reads(session, url, top, args) and ok
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
    line = await closed(batches, args.workers, post_batch)
    wall = time.perf_counter() - begin
    print(line)
    rate = batches * args.batch / wall
    async with connect(dsn) as conn:
        events = await conn.fetchval("SELECT count(*) FROM webhook_events")
        queued = await conn.fetchval("SELECT count(*) FROM webhook_queue")
    print(f"events/s            {rate:,.0f}  (target >= 20,000)")
    print(f"check               {events} events stored, {queued} queue rows (1 subscriber)")
    return bool(events == queued == (batches + 20) * args.batch)


async def phase_reads(
    session: aiohttp.ClientSession, url: str, top: int, args: argparse.Namespace
) -> bool:
    async def get_one() -> bool:
        async with session.get(f"{url}/v1/webhooks/{random.randint(1, top)}") as answer:
            await answer.read()
            return answer.status == 200

    async def get_page() -> bool:
        cursor = encode_cursor({"after": random.randint(0, top - 100)})
        async with session.get(url + "/v1/webhooks", params={"cursor": cursor}) as answer:
            body = await answer.json()
            return answer.status == 200 and len(body["data"]) == 100

    section("GET /v1/webhooks/{id} (with health), random ids")
    await closed(200, 4, get_one)  # warm-up
    print(await paced(args.rate, args.seconds, get_one))
    section(f"GET /v1/webhooks?limit=100 at a random cursor, of {args.webhooks} webhooks")
    print("(target p99 <= 25 ms)")
    await closed(50, 1, get_page)
    print(await closed(args.pages, 1, get_page))
    print(await closed(args.pages, 4, get_page))
    return True


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--webhooks", type=int, default=100_000)
    p.add_argument("--rate", type=float, default=500.0, help="GET /v1/webhooks/{id} per second")
    p.add_argument("--seconds", type=float, default=10.0, help="length of the paced phase")
    p.add_argument("--pages", type=int, default=1000, help="list requests per client setting")
    p.add_argument("--events", type=int, default=50_000, help="events in the POST phase")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--workers", type=int, default=8, help="concurrent POST clients")
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
