"""Backlog bench: with a large backlog of pending events held for a disabled endpoint, do a
healthy endpoint's claim time and throughput match the no-backlog case?

    .venv/bin/python bench/backlog.py [--backlog 1000000] [--events 30000] [--dsn ADMIN_DSN]

One run on one throw-away database `webhook_engine_bench_<random>` (dropped at the end, also on
error, Ctrl-C or SIGTERM), with the receiver in its own process on 127.0.0.1 and the real CLI
as the daemon:

1. two webhooks with topics '{}' (targeted events only): `healthy` posts to the receiver,
   `held` is disabled, so its events wait in the queue;
2. no backlog: due_webhooks, claim + settle_due timed through engine.db.store, then
   `run --burst` delivers --events events for `healthy`;
3. --backlog events for `held`, then VACUUM ANALYZE of the queue and the events, and a
   CHECKPOINT, so that the load's write-back is not part of what step 4 measures;
4. with backlog: step 2 again, each phase printing EXPLAIN (ANALYZE, BUFFERS) of both queries;
5. ratios, sizes, checks and a one-line JSON summary; exit 1 when a check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

# Run as a script, sys.path[0] is bench/ itself: put the repo root first so that the sibling
# modules import as the `bench` package, here and in the receiver's spawned process.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import run_main
from bench.backlog_phases import (
    BACKLOG_CHUNK,
    CLAIM_ITERATIONS,
    CLAIM_QUEUED,
    VACUUMED,
    BacklogFill,
    BurstResult,
    ClaimTiming,
    phase_backlog,
    phase_burst,
    phase_claims,
)
from bench.daemon import write_config
from bench.database import (
    QueueState,
    Sizes,
    add_targeted_webhook,
    bench_database,
    connect,
    queue_state,
    resolve_admin_dsn,
    server_settings,
    sizes,
    webhook_id_stats,
)
from bench.phases import bounded
from bench.receiver import ReceiverClient, receiver_process
from bench.report import machine_facts, print_machine_busy, print_run, section
from bench.tally import percentile

# Never contacted while the endpoint is disabled; if it were, the refused connection would show
# as attempts on the held rows, which the closing check looks for. Port 9 is "discard".
HELD_URL = "http://127.0.0.1:9/held"
MIB = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class Phase:
    claims: ClaimTiming
    burst: BurstResult
    sizes: Sizes


async def run_bench(args: argparse.Namespace) -> bool:
    """Run every phase and print the report; False when a correctness check failed."""
    async with contextlib.AsyncExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wh-backlog-")))
        dsn = await stack.enter_async_context(bench_database(args.dsn))
        rx = await stack.enter_async_context(receiver_process())
        config = write_config(workdir / "bench.toml", dsn, args)
        async with connect(dsn) as conn:
            healthy = await add_targeted_webhook(conn, "healthy", rx.hook_url, "active")
            held = await add_targeted_webhook(conn, "held", HELD_URL, "disabled")
        autovacuum = (await server_settings(dsn)).autovacuum
        await print_header(args, dsn, rx, healthy, held, autovacuum)

        before = await measure("no backlog", args, dsn, healthy, rx, config, workdir)
        section(f"backlog: {args.backlog:,} events for the disabled endpoint")
        fill = await bounded(
            "backlog", phase_backlog(dsn, held, args.backlog), args.phase_timeout, rx
        )
        async with connect(dsn) as conn:
            print_fill(fill, await sizes(conn), autovacuum)
        after = await measure("with backlog", args, dsn, healthy, rx, config, workdir)

        async with connect(dsn) as conn:
            held_end = await queue_state(conn, held)
        return print_closing(args, before, fill, after, held_end)


async def measure(
    label: str,
    args: argparse.Namespace,
    dsn: str,
    healthy: int,
    rx: ReceiverClient,
    config: Path,
    workdir: Path,
) -> Phase:
    t = args.phase_timeout
    section(
        f"{label}: claim timing, engine.db.store, {CLAIM_QUEUED:,} queued, "
        f"{CLAIM_ITERATIONS} x (due_webhooks, then claim 1 row + settle_due)"
    )
    async with connect(dsn) as conn:
        print(f"planner stats      webhook_queue.webhook_id: {await webhook_id_stats(conn)}")
    claims = await bounded(f"{label} claims", phase_claims(dsn, healthy), t, rx)
    print_claims(claims)
    section(f"{label}: throughput, {args.events:,} events for `healthy`, then `run --burst`")
    log = workdir / f"{label.replace(' ', '-')}.log"
    burst = await bounded(
        f"{label} throughput", phase_burst(dsn, healthy, rx, config, log, args.events), t, rx
    )
    async with connect(dsn) as conn:
        after = await sizes(conn)
    print_burst(burst)
    print_sizes(after)
    return Phase(claims=claims, burst=burst, sizes=after)


# --- report ------------------------------------------------------------------------------------


async def print_header(
    args: argparse.Namespace,
    dsn: str,
    rx: ReceiverClient,
    healthy: int,
    held: int,
    autovacuum: str,
) -> None:
    print_run("webhook-engine backlog bench", await machine_facts(dsn), args)
    print(f"autovacuum         {autovacuum} (server setting)")
    print(f"database           {dsn.rsplit('/', 1)[-1]} (fresh, dropped at the end)")
    print(f"receiver           {rx.hook_url} (separate process)")
    print(f"webhooks           healthy id {healthy} -> receiver, maximum_events 1, topics '{{}}'")
    print(f"                   held id {held} -> {HELD_URL}, status disabled, topics '{{}}'")


def print_claims(c: ClaimTiming) -> None:
    print(f"due_webhooks       {_ms(c.ready_ms)}")
    print(f"claim+settle       {_ms(c.claim_ms)}")
    print(f"afterwards         deleted the healthy endpoint's {c.deleted} queue rows")
    for name, lines in c.plans.items():
        print(f"EXPLAIN (ANALYZE, BUFFERS) {name} (at the end of the timing; claim rolled back):")
        print("\n".join(f"  {line}" for line in lines))
    sys.stdout.flush()


def _ms(sorted_ms: Sequence[float]) -> str:
    def p(q: float) -> float:
        return percentile(sorted_ms, q)

    return (
        f"p50 {p(50):.2f} ms, p99 {p(99):.2f} ms, max {p(100):.2f} ms "
        f"(min {p(0):.2f} ms, n={len(sorted_ms)})"
    )


def print_burst(r: BurstResult) -> None:
    s = r.seen
    print(f"insert             {r.events} events in {r.insert_s:.2f} s")
    print(f"first received     {s.first_at - r.started_at:.2f} s after daemon start")
    print(f"last received      {r.seconds:.2f} s after daemon start")
    print(f"daemon exited      {r.exited_at - r.started_at:.2f} s after start, code {r.exit_code}")
    print(f"events/s           {r.eps:,.0f} (start to last), {r.steady_eps:,.0f} (first to last)")
    print(f"received           {s.distinct}/{s.expected} distinct, {s.duplicates} duplicates,")
    print(f"                   {s.missing} missing, {s.unexpected} unexpected")
    print(f"healthy queue      {r.left.rows} rows left (expected 0)")
    print(f"peak RSS           {r.peak_rss_kib / 1024:.1f} MiB")
    print(f"cpu                daemon {r.daemon_cpu_s:.2f} s, receiver {r.cpu.receiver_s:.2f} s")
    print_machine_busy(r.cpu)
    print("\n".join(r.log), flush=True)


def print_sizes(s: Sizes) -> None:
    print(
        f"sizes              database {s.database / MIB:,.1f} MiB, webhook_queue "
        f"{s.queue_total / MIB:,.1f} MiB (indexes {s.queue_indexes / MIB:,.1f} MiB), "
        f"webhook_events {s.events_total / MIB:,.1f} MiB"
    )
    print(
        f"webhook_queue      ~{s.queue_live:,} live, ~{s.queue_dead:,} dead rows (statistics), "
        f"vacuumed {s.queue_vacuums} time(s) so far",
        flush=True,
    )


def print_fill(f: BacklogFill, s: Sizes, autovacuum: str) -> None:
    slowest, fastest = max(f.chunk_s), min(f.chunk_s)
    print(
        f"insert             {f.rows:,} events in {len(f.chunk_s)} INSERT ... SELECT of up to "
        f"{BACKLOG_CHUNK:,}: {f.insert_s:.1f} s ({f.rows / f.insert_s:,.0f} events/s; "
        f"chunks {fastest:.1f}-{slowest:.1f} s)"
    )
    print(
        f"VACUUM ANALYZE     {', '.join(VACUUMED)}: {f.vacuum_s:.1f} s "
        f"(run explicitly; server autovacuum = {autovacuum})"
    )
    print(f"CHECKPOINT         {f.checkpoint_s:.1f} s (the load's write-back, before measuring)")
    print(
        f"held queue rows    {f.held.rows:,} (expected {f.rows:,}), {f.held.untouched:,} untouched"
    )
    print_sizes(s)


def _ratio(with_backlog: float, without: float) -> float:
    return with_backlog / without if without else float("nan")


def comparison(before: Phase, after: Phase) -> dict[str, tuple[float, float]]:
    """Metric name to (no backlog, with backlog)."""
    b, a = before, after
    return {
        "ready_p50_ms": (b.claims.ready(50), a.claims.ready(50)),
        "ready_p99_ms": (b.claims.ready(99), a.claims.ready(99)),
        "claim_p50_ms": (b.claims.claim(50), a.claims.claim(50)),
        "claim_p99_ms": (b.claims.claim(99), a.claims.claim(99)),
        "eps": (b.burst.eps, a.burst.eps),
        "steady_eps": (b.burst.steady_eps, a.burst.steady_eps),
    }


def failed_checks(
    args: argparse.Namespace, before: Phase, fill: BacklogFill, after: Phase, held_end: QueueState
) -> list[str]:
    checks: dict[str, bool] = {}
    for label, phase in (("no backlog", before), ("with backlog", after)):
        seen, burst = phase.burst.seen, phase.burst
        checks[f"{label}: every event received"] = seen.missing == 0 and seen.unexpected == 0
        checks[f"{label}: no duplicates"] = seen.duplicates == 0
        checks[f"{label}: burst daemon exited 0"] = burst.exit_code == 0
        checks[f"{label}: healthy queue empty after the burst"] = burst.left.rows == 0
        checks[f"{label}: claim timing left {CLAIM_QUEUED} rows"] = (
            phase.claims.deleted == CLAIM_QUEUED
        )
    checks["backlog: every held event queued after the fill"] = fill.held.rows == args.backlog
    checks["end: held backlog intact (all queued, never attempted or leased)"] = (
        held_end.rows == args.backlog and held_end.untouched == args.backlog
    )
    return [name for name, ok in checks.items() if not ok]


def print_closing(
    args: argparse.Namespace, before: Phase, fill: BacklogFill, after: Phase, held_end: QueueState
) -> bool:
    section("with backlog / no backlog")
    rows = comparison(before, after)
    print(f"{'':<18} {'no backlog':>12} {'with backlog':>13} {'ratio':>7}")
    for name, (without, with_backlog) in rows.items():
        ratio = _ratio(with_backlog, without)
        print(f"{name:<18} {without:>12,.2f} {with_backlog:>13,.2f} {ratio:>7.2f}")
    print(
        f"held at the end    {held_end.rows:,} queue rows, {held_end.untouched:,} untouched "
        f"(expected {args.backlog:,})"
    )
    failed = failed_checks(args, before, fill, after, held_end)
    print(f"checks             {'FAILED: ' + '; '.join(failed) if failed else 'all passed'}")
    summary = {
        "backlog": args.backlog,
        "events": args.events,
        "no_backlog": {k: round(v[0], 3) for k, v in rows.items()},
        "with_backlog": {k: round(v[1], 3) for k, v in rows.items()},
        "ratio": {k: round(_ratio(v[1], v[0]), 3) for k, v in rows.items()},
        "backlog_insert_s": round(fill.insert_s, 1),
        "vacuum_analyze_s": round(fill.vacuum_s, 1),
        "checkpoint_s": round(fill.checkpoint_s, 1),
        "database_mib": round(after.sizes.database / MIB, 1),
        "queue_mib": round(after.sizes.queue_total / MIB, 1),
        "duplicates": before.burst.seen.duplicates + after.burst.seen.duplicates,
        "missing": before.burst.seen.missing + after.burst.seen.missing,
        "held_queued_at_end": held_end.rows,
        "failed_checks": failed,
    }
    print(orjson.dumps(summary).decode(), flush=True)
    return not failed


# --- command line ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--backlog", type=int, default=1_000_000, help="events held for `held`")
    p.add_argument("--events", type=int, default=30_000, help="events per throughput phase")
    p.add_argument("--concurrency", type=int, default=64, help="daemon: delivery.concurrency")
    p.add_argument("--per-endpoint", type=int, default=64, help="daemon: per_endpoint_concurrency")
    p.add_argument(
        "--synchronous-commit", default="on", choices=("on", "off", "local", "remote_write")
    )
    p.add_argument("--phase-timeout", type=float, default=600.0, help="seconds per phase")
    p.add_argument("--dsn", help="admin DSN (default: $WEBHOOK_ENGINE_TEST_DSN, else local)")
    args = p.parse_args(argv)
    resolve_admin_dsn(p, args)
    if min(args.backlog, args.events, args.concurrency, args.per_endpoint) < 1:
        p.error("counts and concurrencies must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(run_bench(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
