"""The backlog bench's phases: claim timing through engine.db.store, a burst delivery of events
targeted at one webhook, and the backlog fill; each returns what it measured."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from bench import BenchError
from bench.daemon import log_summary, running_daemon
from bench.database import (
    QueueState,
    connect,
    delete_queued,
    explain,
    insert_targeted,
    queue_state,
    queued_event_ids,
    vacuum_analyze,
)
from bench.procfs import CpuMeter, CpuUse
from bench.receiver import ReceiverClient
from bench.tally import Tally, percentile, tally
from engine.db.store import QUERIES, ClaimBudget, Settlement, Store
from engine.delivery.batching import envelope_overhead_estimate

CLAIM_QUEUED = 2_000  # events queued for the healthy endpoint while claims are timed
CLAIM_ITERATIONS = 500
CLAIM_LEASE_S = 60.0
CLAIM_MAX_BYTES = 10**6
THROUGHPUT_CHUNK = 5_000
BACKLOG_CHUNK = 100_000
VACUUMED = ["webhook_queue", "webhook_events"]


@dataclass(frozen=True, kw_only=True)
class ClaimTiming:
    queued: int
    ready_ms: list[float]  # ascending, one per iteration
    claim_ms: list[float]  # ascending, one per iteration
    deleted: int  # the healthy endpoint's queue rows removed afterwards
    plans: dict[str, list[str]]  # query name to EXPLAIN (ANALYZE, BUFFERS) lines

    def ready(self, p: float) -> float:
        return percentile(self.ready_ms, p)

    def claim(self, p: float) -> float:
        return percentile(self.claim_ms, p)


async def phase_claims(dsn: str, healthy_id: int) -> ClaimTiming:
    """Queue CLAIM_QUEUED events for the healthy endpoint, then time CLAIM_ITERATIONS rounds of
    what the scheduler does per pass (due_webhooks, claim one row, settle_due) through a fresh
    Store; EXPLAIN both queries as they stand at the end, then drop the healthy endpoint's
    queue rows."""
    async with connect(dsn) as conn:
        await insert_targeted(conn, healthy_id, CLAIM_QUEUED, CLAIM_QUEUED)
    store = await Store.open(dsn, pool_size=2, synchronous_commit="on")
    try:
        ready_ms, claim_ms = await _time_claims(store, healthy_id)
    finally:
        await store.close()
    async with connect(dsn) as conn:
        plans = await explain_claim_path(conn, healthy_id)
        deleted = await delete_queued(conn, healthy_id)
    return ClaimTiming(
        queued=CLAIM_QUEUED,
        ready_ms=sorted(ready_ms),
        claim_ms=sorted(claim_ms),
        deleted=deleted,
        plans=plans,
    )


async def _time_claims(store: Store, healthy_id: int) -> tuple[list[float], list[float]]:
    ready_ms: list[float] = []
    claim_ms: list[float] = []
    for i in range(CLAIM_ITERATIONS):
        started = time.perf_counter()
        due = await store.due_webhooks(64)
        readied = time.perf_counter()
        if [d.webhook.id for d in due] != [healthy_id]:
            raise BenchError(
                f"claim timing, iteration {i}: due_webhooks returned ids "
                f"{[d.webhook.id for d in due]}, expected only the healthy endpoint {healthy_id}"
            )
        budget = ClaimBudget(webhook=due[0].webhook, max_rows=1, max_bytes=CLAIM_MAX_BYTES)
        claimed = await store.claim([budget], lease_s=CLAIM_LEASE_S)
        await store.settle_due(
            [Settlement(webhook_id=healthy_id, version=due[0].version, mode="next")]
        )
        done = time.perf_counter()
        if list(claimed) != [healthy_id] or len(claimed[healthy_id]) != 1:
            got = {w: len(events) for w, events in claimed.items()}
            raise BenchError(f"claim timing, iteration {i}: claimed {got}, expected one event")
        ready_ms.append((readied - started) * 1000)
        claim_ms.append((done - readied) * 1000)
    return ready_ms, claim_ms


async def explain_claim_path(conn: asyncpg.Connection, healthy_id: int) -> dict[str, list[str]]:
    """EXPLAIN (ANALYZE, BUFFERS) of due_webhooks and of claim with the healthy endpoint's
    parameters; the claim (an UPDATE, really executed) in a transaction rolled back after."""
    claim_args = ([healthy_id], [1], [CLAIM_MAX_BYTES], envelope_overhead_estimate(), CLAIM_LEASE_S)
    return {
        "due_webhooks": await explain(conn, QUERIES["due_webhooks"], 64, rollback=True),
        "claim": await explain(conn, QUERIES["claim"], *claim_args, rollback=True),
    }


@dataclass(frozen=True, kw_only=True)
class BurstResult:
    events: int
    insert_s: float
    started_at: float
    exited_at: float
    exit_code: int
    peak_rss_kib: int
    daemon_cpu_s: float
    cpu: CpuUse
    seen: Tally
    left: QueueState  # the healthy endpoint's queue rows after the daemon exited
    log: list[str]

    @property
    def seconds(self) -> float:
        """Daemon start to the last event received."""
        return self.seen.last_at - self.started_at

    @property
    def eps(self) -> float:
        return self.seen.distinct / self.seconds if self.seen.distinct else math.nan

    @property
    def steady_eps(self) -> float:
        """First to last event received: without the daemon's start-up."""
        span_s = self.seen.last_at - self.seen.first_at
        return (self.seen.distinct - 1) / span_s if span_s > 0 else math.nan


async def phase_burst(
    dsn: str, healthy_id: int, receiver: ReceiverClient, config: Path, log: Path, events: int
) -> BurstResult:
    """Queue `events` for the healthy endpoint, then `run --burst` until it exits."""
    async with connect(dsn) as conn:
        started = time.perf_counter()
        await insert_targeted(conn, healthy_id, events, THROUGHPUT_CHUNK)
        insert_s = time.perf_counter() - started
        expected = await queued_event_ids(conn, healthy_id)
    if len(expected) != events:
        raise BenchError(f"{len(expected)} queue rows for the healthy endpoint, expected {events}")
    await receiver.reset()
    meter = CpuMeter(receiver.pid)
    async with running_daemon(config, burst=True, log=log) as daemon:
        exit_code = await daemon.wait()
        exited_at = time.time()
    cpu = meter.read()
    async with connect(dsn) as conn:
        left = await queue_state(conn, healthy_id)
    return BurstResult(
        events=events,
        insert_s=insert_s,
        started_at=daemon.started_at,
        exited_at=exited_at,
        exit_code=exit_code,
        peak_rss_kib=daemon.peak_rss_kib,
        daemon_cpu_s=daemon.cpu_s,
        cpu=cpu,
        seen=tally(await receiver.records(), expected),
        left=left,
        log=log_summary(log),
    )


@dataclass(frozen=True, kw_only=True)
class BacklogFill:
    rows: int
    chunk_s: list[float]  # in insert order
    vacuum_s: float
    checkpoint_s: float
    held: QueueState

    @property
    def insert_s(self) -> float:
        return sum(self.chunk_s)


async def phase_backlog(dsn: str, held_id: int, rows: int) -> BacklogFill:
    """`rows` events for the disabled endpoint, BACKLOG_CHUNK per INSERT; then VACUUM ANALYZE
    (autovacuum may be off: nothing else would update the planner's statistics) and CHECKPOINT:
    the checkpoint the load sets off would otherwise still be writing, spread out, during the
    measured phase and slow every process on the machine alike (measured: the receiver, which
    does the same work in both phases, used 40 % more CPU in the second)."""
    async with connect(dsn) as conn:
        chunk_s = await insert_targeted(conn, held_id, rows, BACKLOG_CHUNK)
        vacuum_s = await vacuum_analyze(conn, VACUUMED)
        started = time.perf_counter()
        await conn.execute("CHECKPOINT")
        checkpoint_s = time.perf_counter() - started
        held = await queue_state(conn, held_id)
    return BacklogFill(
        rows=rows, chunk_s=chunk_s, vacuum_s=vacuum_s, checkpoint_s=checkpoint_s, held=held
    )
