"""Delivery bench: the raw HTTP limit, the daemon's throughput from a full queue, and
insert-commit-to-receive latency at a steady insert rate.

    .venv/bin/python bench/throughput.py [--events 20000] [--concurrency 64] [--per-endpoint 64]

A throw-away database `webhook_engine_bench_<random>` is created on the admin DSN's server and
dropped at the end, also on error, Ctrl-C or SIGTERM. The receiver is an aiohttp server in its
own process; the daemon is the real CLI as a subprocess. Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

# Run as a script, sys.path[0] is bench/ itself: put the repo root first so that the sibling
# modules import as the `bench` package, here and in the receiver's spawned process.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import run_main
from bench.daemon import write_config
from bench.database import bench_database, resolve_admin_dsn
from bench.phases import bounded, phase_latency, phase_raw, phase_throughput
from bench.receiver import receiver_process
from bench.report import (
    machine_facts,
    print_closing,
    print_header,
    print_latency,
    print_raw,
    print_throughput,
    section,
)


async def run_bench(args: argparse.Namespace) -> bool:
    """Run every phase and print the report; False when a correctness check failed."""
    t = args.phase_timeout
    async with contextlib.AsyncExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wh-bench-")))
        dsn = await stack.enter_async_context(bench_database(args.dsn))
        rx = await stack.enter_async_context(receiver_process())
        config = write_config(workdir / "bench.toml", dsn, args)
        facts = await machine_facts(dsn)
        print_header(facts, args, dsn, rx.base_url)
        section("raw limit: bare aiohttp client -> receiver, no database")
        raw = await bounded("raw limit", phase_raw(rx, args), t, rx)
        print_raw(raw)
        section("throughput: queue filled first, then `run --burst`")
        thr = await bounded("throughput", phase_throughput(dsn, rx, config, workdir, args), t, rx)
        print_throughput(thr, args.events)
        section("latency: one event per transaction at a steady rate, daemon running")
        lat = await bounded("latency", phase_latency(dsn, rx, config, workdir, args), t, rx)
        print_latency(lat, expected_logs=thr.posts + 1 + lat.events)
        failed = print_closing(facts, args, raw, thr, lat)
        return not failed


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--events", type=int, default=20_000, help="events in the throughput phase")
    p.add_argument("--concurrency", type=int, default=64, help="daemon: delivery.concurrency")
    p.add_argument(
        "--per-endpoint", type=int, default=64, help="daemon: per_endpoint_concurrency; raw phase"
    )
    p.add_argument("--endpoints", type=int, default=1, help="events spread over this many")
    p.add_argument("--daemons", type=int, default=1, help="burst daemons run side by side")
    p.add_argument("--maximum-events", type=int, default=1, help="webhooks.maximum_events")
    p.add_argument(
        "--synchronous-commit", default="on", choices=("on", "off", "local", "remote_write")
    )
    p.add_argument("--latency-events", type=int, default=2_000)
    p.add_argument("--rate", type=float, default=500.0, help="latency phase inserts per second")
    p.add_argument("--phase-timeout", type=float, default=300.0, help="seconds per phase")
    p.add_argument("--dsn", help="admin DSN (default: $WEBHOOK_ENGINE_TEST_DSN, else local)")
    args = p.parse_args(argv)
    resolve_admin_dsn(p, args)
    counts = (args.events, args.concurrency, args.per_endpoint, args.latency_events)
    if min(*counts, args.endpoints, args.maximum_events, args.daemons) < 1:
        p.error("counts and concurrencies must be at least 1")
    if args.rate <= 0:
        p.error("--rate must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(run_bench(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
