"""Request-path bench: CPU per request of the daemon's own HTTP path, without the database,
against a bare aiohttp client posting to the same receiver at the same concurrency, in one run.

    .venv/bin/python bench/request_path.py [--requests 20000] [--concurrency 8] [--rounds 2]

Three clients take turns, each for `--rounds` rounds:
- bare:   aiohttp's ClientSession.post and read, as throughput.py's raw phase;
- sender: engine.delivery.sender.Sender.send (timeouts, network policy, capped reading);
- worker: engine.delivery.worker.Worker.deliver: the body of a claimed event (batching.split),
  the signed request (profiles.build_request), Sender.send, the log row and the outcome.
What the daemon adds beyond `worker` (claims, the scheduler, the recorder's writes) is the
difference between throughput.py's figure and this one. The receiver is the same aiohttp server
process as throughput.py's, on 127.0.0.1. No database is used.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from bench import run_main
from bench.phases import post_all, raw_body, raw_headers
from bench.procfs import cpu_model
from bench.receiver import ReceiverClient, receiver_process
from bench.report import print_run, section
from engine.config import DeliveryConfig, RecorderConfig, RetryConfig
from engine.delivery import batching
from engine.delivery.policy import RetryPolicy
from engine.delivery.sender import Sender
from engine.delivery.worker import Worker
from engine.models import Event, OutgoingRequest, Webhook
from engine.wire import profiles
from engine.wire.networks import NetworkPolicy

SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3"


def _sender(concurrency: int) -> Sender:
    """A Sender with the daemon's default timeouts and limits, allowed to reach loopback."""
    d = DeliveryConfig()
    return Sender(
        concurrency=concurrency,
        connect_timeout_s=d.connect_timeout_s,
        total_timeout_s=d.total_timeout_s,
        response_limit_chars=RecorderConfig().log_body_limit_chars,
        networks=NetworkPolicy.from_cidrs(["127.0.0.0/8"]),
    )


async def _in_parallel(
    ids: Iterator[int], concurrency: int, one: Callable[[int], Awaitable[None]]
) -> None:
    async def take_while_any_left() -> None:
        for i in ids:  # shared iterator: every id is taken once
            await one(i)

    await asyncio.gather(*(take_while_any_left() for _ in range(concurrency)))


async def run_sender(url: str, requests: int, concurrency: int) -> int:
    timestamp = orjson.dumps(datetime.now(UTC), option=orjson.OPT_UTC_Z)
    failures = 0
    async with _sender(concurrency) as sender:

        async def one(i: int) -> None:
            nonlocal failures
            request = OutgoingRequest(
                method="POST", url=url, headers=raw_headers(i), body=raw_body(i, timestamp)
            )
            failures += (await sender.send(request)).error is not None

        await _in_parallel(iter(range(1, requests + 1)), concurrency, one)
    return failures


async def run_worker(url: str, requests: int, concurrency: int) -> int:
    webhook = Webhook(
        id=1,
        url=url,
        method="POST",
        auth_type="hmac",
        secret=SECRET,
        basic_username=None,
        basic_password=None,
        headers={},
        maximum_events=1,
        maximum_size=256 * 1024,
        consecutive_failures=0,
        name="bench",
    )
    body_format = profiles.body_format(webhook)
    created_at = datetime.now(UTC)
    failures = 0
    async with _sender(concurrency) as sender:
        worker = Worker(
            sender,
            policy=RetryPolicy.from_config(RetryConfig()),
            user_agent="webhook-engine/0.1",
            log_body_limit_chars=RecorderConfig().log_body_limit_chars,
        )

        async def one(i: int) -> None:
            nonlocal failures
            payload = b'{"n": %d, "pad": "%b"}' % (i, b"x" * 64)
            event = Event(
                id=i, topic="order.created", created_at=created_at, payload=payload, attempt=1
            )
            (batch,) = batching.split([event], 1, webhook.maximum_size, body_format)
            outcome = await worker.deliver(webhook, batch)
            failures += not outcome.success

        await _in_parallel(iter(range(1, requests + 1)), concurrency, one)
    return failures


CLIENTS: dict[str, Callable[[str, int, int], Awaitable[int]]] = {
    "bare": post_all,
    "sender": run_sender,
    "worker": run_worker,
}


async def measure(rx: ReceiverClient, name: str, args: argparse.Namespace) -> tuple[float, float]:
    """(requests/s, CPU microseconds of this process per request) of one round."""
    await rx.reset()
    cpu, wall = time.process_time(), time.perf_counter()
    failures = await CLIENTS[name](rx.hook_url, args.requests, args.concurrency)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if failures:
        raise RuntimeError(f"{name}: {failures} requests failed")
    seen = await rx.records()
    if len(seen) != args.requests:
        raise RuntimeError(f"{name}: the receiver saw {len(seen)} of {args.requests} requests")
    return args.requests / wall, cpu / args.requests * 1e6


async def run_bench(args: argparse.Namespace) -> bool:
    from engine.logs import configure

    configure("info")  # as the daemon runs: the debug line of each success is not written
    facts = {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": cpu_model(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }
    print_run("webhook-engine request-path bench (no database)", facts, args)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in CLIENTS}
    async with receiver_process() as rx:
        print(f"receiver           {rx.hook_url} (separate process)")
        for round_ in range(1, args.rounds + 1):
            section(
                f"round {round_}: {args.requests} requests each at concurrency {args.concurrency}"
            )
            for name in CLIENTS:
                rps, us = await measure(rx, name, args)
                results[name].append((rps, us))
                print(
                    f"{name:<8} {rps:>9,.0f} requests/s   {us:6.1f} us CPU per request", flush=True
                )
    section("summary (best round of each; CPU is this process's, the receiver's excluded)")
    bare_rps = max(r for r, _ in results["bare"])
    bare_us = min(u for _, u in results["bare"])
    for name in CLIENTS:
        rps = max(r for r, _ in results[name])
        us = min(u for _, u in results[name])
        print(
            f"{name:<8} {rps:>9,.0f} requests/s = {rps / bare_rps:.2f} x bare;"
            f"  {us:6.1f} us/request = {us / bare_us:.2f} x bare"
        )
    return True


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--requests", type=int, default=20_000)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args(argv)
    if min(args.requests, args.concurrency, args.rounds) < 1:
        p.error("counts must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(run_bench(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
