"""The operator commands of the command line, `status` and `tail`: their arguments, and running
them against the configured database."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from datetime import UTC, datetime

import asyncpg

from engine.config import Config
from engine.db.ops import OpsReader, TailFilter
from engine.db.store import Store
from engine.ops import status, tail

STATUS_HELP = "one row per endpoint: state, pending, failed, last success and last error"
TAIL_HELP = "follow deliveries as they are recorded, a line per request (until Ctrl-C/SIGTERM)"
# An id that names no webhook (or one of another tenant) is a usage error, as elsewhere.
EXIT_UNKNOWN_WEBHOOK = 2


def status_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("webhook_ids", nargs="*", type=int, metavar="WEBHOOK_ID", help="only these")
    p.add_argument("--tenant", help="only this tenant's endpoints")
    p.add_argument("--json", action="store_true", help="JSON lines instead of a table")


def tail_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--webhook", type=int, help="only this webhook id")
    p.add_argument("--tenant", help="only this tenant's endpoints")
    p.add_argument("--failures", action="store_true", help="only failed requests")
    p.add_argument("--since", help="start this far back (30s, 10m, 1h, 2d) or at an ISO time")
    p.add_argument("--json", action="store_true", help="JSON lines instead of text")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between queries (1)")


async def run(args: argparse.Namespace, config: Config) -> int:
    """Run `status` or `tail`; returns the exit code."""
    problem = _argument_problem(args)
    if problem:
        print(f"webhook-engine: {problem}", file=sys.stderr)
        return 2
    store = await Store.open(
        config.database.dsn, pool_size=1, synchronous_commit=config.database.synchronous_commit
    )
    try:
        reader = OpsReader(store.pool)
        if args.command == "status":
            return await status.show(reader, args.webhook_ids, args.tenant, as_json=args.json)
        return await _tail(reader, args, config)
    except asyncpg.UndefinedTableError as exc:
        print(f"webhook-engine: {exc}: run `webhook-engine init-db`", file=sys.stderr)
        return 2
    finally:
        await store.close()


def _argument_problem(args: argparse.Namespace) -> str | None:
    if args.command != "tail":
        return None
    if not args.interval > 0:
        return f"--interval must be more than 0 seconds, got {args.interval}"
    if args.since is not None:
        try:
            tail.parse_since(args.since, datetime.now(UTC))
        except ValueError as exc:
            return str(exc)
    return None


async def _tail(reader: OpsReader, args: argparse.Namespace, config: Config) -> int:
    if args.webhook is not None and not await reader.existing_webhooks([args.webhook]):
        print(f"webhook-engine: there is no webhook {args.webhook}", file=sys.stderr)
        return EXIT_UNKNOWN_WEBHOOK
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    options = tail.TailOptions(
        where=TailFilter(webhook_id=args.webhook, tenant=args.tenant, failures_only=args.failures),
        since=args.since,
        as_json=args.json,
        interval_s=args.interval,
        lookback_s=config.delivery.total_timeout_s + 5.0,
    )
    await tail.follow(reader, options, stop)
    return 0
