"""The three phases: the raw HTTP limit, throughput from a full queue, and insert-commit-to-receive
latency at a steady insert rate; each returns what it measured."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import aiohttp
import asyncpg
import orjson

from bench import BenchError
from bench.daemon import log_summary, running_daemon
from bench.database import (
    EngineRecords,
    add_webhooks,
    connect,
    engine_records,
    insert_bulk,
    insert_one,
    insert_paced,
    xact_commits,
)
from bench.procfs import CpuMeter, CpuUse
from bench.receiver import ReceiverClient
from bench.tally import Tally, first_receipts, percentile, tally

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class RawResult:
    requests: int
    concurrency: int
    seconds: float
    failures: int
    client_cpu_s: float
    cpu: CpuUse
    seen: Tally

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def other_cpus(self) -> float:
        """CPUs kept busy by processes other than the client and the receiver: this phase
        wants two whole CPUs, so on a small machine any neighbour lowers the limit."""
        busy_s = self.cpu.machine_busy * len(os.sched_getaffinity(0)) * self.seconds
        return (busy_s - self.client_cpu_s - self.cpu.receiver_s) / self.seconds


def raw_body(event_id: int, timestamp: bytes) -> bytes:
    """A body shaped like the engine's for maximum_events = 1 and the bench's payload."""
    data = b'{"n": %d, "pad": "%b"}' % (event_id, b"x" * 64)
    return b'{"id":%d,"type":"order.created","timestamp":%b,"data":%b}' % (
        event_id,
        timestamp,
        data,
    )


def raw_headers(event_id: int) -> dict[str, str]:
    """Headers of the engine's size and names; the signature is a fixed dummy."""
    return {
        "User-Agent": "webhook-engine/0.1",
        "Content-Type": "application/json",
        "webhook-id": f"msg_{event_id}",
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": "v1," + "A" * 43 + "=",
    }


async def post_all(url: str, requests: int, concurrency: int) -> int:
    """POST `requests` bodies with `concurrency` requests in flight; returns the non-200s."""
    timestamp = orjson.dumps(datetime.now(UTC), option=orjson.OPT_UTC_Z)
    ids = iter(range(1, requests + 1))
    failures = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",)) as s:

        async def post_while_any_left() -> None:
            nonlocal failures
            for event_id in ids:  # shared iterator: every id is taken once
                body = raw_body(event_id, timestamp)
                async with s.post(url, data=body, headers=raw_headers(event_id)) as resp:
                    await resp.read()
                    failures += resp.status != 200

        await asyncio.gather(*(post_while_any_left() for _ in range(concurrency)))
    return failures


async def phase_raw(receiver: ReceiverClient, args: argparse.Namespace) -> RawResult:
    await receiver.reset()
    meter = CpuMeter(receiver.pid)
    client_cpu = time.process_time()
    started = time.perf_counter()
    failures = await post_all(receiver.hook_url, args.events, args.per_endpoint)
    seconds = time.perf_counter() - started
    result = RawResult(
        requests=args.events,
        concurrency=args.per_endpoint,
        seconds=seconds,
        failures=failures,
        client_cpu_s=time.process_time() - client_cpu,
        cpu=meter.read(),
        seen=tally(await receiver.records(), set(range(1, args.events + 1))),
    )
    await receiver.reset()
    return result


@dataclass(frozen=True, kw_only=True)
class ThroughputResult:
    insert_s: float
    started_at: float
    exited_at: float
    exit_code: int
    peak_rss_kib: int
    daemon_cpu_s: float
    cpu: CpuUse
    xact_commits: int
    seen: Tally
    posts: int  # HTTP requests the receiver got (one per batch)
    engine: EngineRecords
    log: list[str]

    @property
    def seconds(self) -> float:
        """Daemon start to the last event received."""
        return self.seen.last_at - self.started_at

    @property
    def eps(self) -> float:
        return self.seen.distinct / self.seconds

    @property
    def steady_eps(self) -> float:
        """First to last event received: without the daemon's start-up."""
        span_s = self.seen.last_at - self.seen.first_at
        return (self.seen.distinct - 1) / span_s if span_s > 0 else math.nan


async def phase_throughput(
    dsn: str, receiver: ReceiverClient, config: Path, workdir: Path, args: argparse.Namespace
) -> ThroughputResult:
    async with connect(dsn) as conn:
        await add_webhooks(conn, receiver.hook_url, args.endpoints, args.maximum_events)
        started = time.perf_counter()
        expected = await insert_bulk(conn, args.events, args.endpoints)
        insert_s = time.perf_counter() - started
    await receiver.reset()
    commits_before = await xact_commits(dsn)
    meter = CpuMeter(receiver.pid)
    log = workdir / "throughput.log"
    async with contextlib.AsyncExitStack() as stack:
        daemons = [
            await stack.enter_async_context(running_daemon(config, burst=True, log=log))
            for _ in range(args.daemons)
        ]
        codes = [await daemon.wait() for daemon in daemons]
        exited_at = time.time()
    cpu = meter.read()
    engine = await engine_records(dsn)
    return ThroughputResult(
        insert_s=insert_s,
        started_at=daemons[0].started_at,
        exited_at=exited_at,
        exit_code=max(codes, key=abs),
        peak_rss_kib=max(d.peak_rss_kib for d in daemons),
        daemon_cpu_s=sum(d.cpu_s for d in daemons),
        cpu=cpu,
        xact_commits=engine.xact_commit - commits_before,
        seen=tally(await receiver.records(), expected),
        posts=(await receiver.counts())[0],
        engine=engine,
        log=log_summary(log),
    )


@dataclass(frozen=True, kw_only=True)
class LatencyResult:
    events: int
    rate: float
    insert_s: float
    ready_s: float
    exit_code: int
    stop_s: float
    peak_rss_kib: int
    latencies_ms: list[float]  # ascending
    insert_rtts_ms: list[float]  # ascending: INSERT sent to commit acknowledged
    seen: Tally
    engine: EngineRecords
    log: list[str]

    def ms(self, p: float) -> float:
        return percentile(self.latencies_ms, p)


async def warm_up(conn: asyncpg.Connection, receiver: ReceiverClient) -> float:
    """One event through the daemon, which is then connected and listening; returns the wall
    time the receiver got it."""
    await receiver.reset()
    await insert_one(conn, 0)
    await receiver.wait_distinct(1)
    received_at = min(t for t, _ in await receiver.records())
    await receiver.reset()
    return received_at


async def phase_latency(
    dsn: str, receiver: ReceiverClient, config: Path, workdir: Path, args: argparse.Namespace
) -> LatencyResult:
    log = workdir / "latency.log"
    async with connect(dsn) as conn, running_daemon(config, burst=False, log=log) as daemon:
        ready_s = await warm_up(conn, receiver) - daemon.started_at
        started = time.perf_counter()
        committed = await insert_paced(conn, args.latency_events, args.rate)
        insert_s = time.perf_counter() - started
        await receiver.wait_distinct(len(committed))
        exit_code, stop_s = await daemon.stop()
    records = await receiver.records()
    received = first_receipts(records)
    latencies = [(received[i] - t[1]) * 1000 for i, t in committed.items() if i in received]
    return LatencyResult(
        events=len(committed),
        rate=args.rate,
        insert_s=insert_s,
        ready_s=ready_s,
        exit_code=exit_code,
        stop_s=stop_s,
        peak_rss_kib=daemon.peak_rss_kib,
        latencies_ms=sorted(latencies),
        insert_rtts_ms=sorted((done - sent) * 1000 for sent, done in committed.values()),
        seen=tally(records, set(committed)),
        engine=await engine_records(dsn),
        log=log_summary(log),
    )


async def bounded(name: str, phase: Awaitable[T], timeout_s: float, rx: ReceiverClient) -> T:
    """Run one phase under its own deadline; on expiry say how far the receiver got."""
    deadline = asyncio.timeout(timeout_s)
    try:
        async with deadline:
            return await phase
    except TimeoutError:
        if not deadline.expired():
            raise
        requests, distinct = await rx.counts()
        raise BenchError(
            f"phase {name!r} did not finish within {timeout_s:g} s "
            f"(receiver so far: {requests} requests, {distinct} distinct ids)"
        ) from None
