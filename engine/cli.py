"""Command line: `webhook-engine init-db`, `run`, `failed`, `replay`; the API's `api` and
`api-key` come from engine/api/commands.py."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from urllib.parse import unquote, urlsplit

import asyncpg
import orjson
import structlog

from engine import daemon, logs
from engine.aio import run_loop
from engine.api import commands as api_commands
from engine.config import Config, ConfigError
from engine.db.store import Store, init_schema


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="webhook-engine", description="Deliver webhooks out of Postgres."
    )
    parser.add_argument("--log-level", default="info", help="debug, info, warning, error")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("init-db", "create the schema (safe to run again)"),
        ("run", "deliver webhooks until SIGTERM/SIGINT"),
        ("failed", "list deliveries that used all their attempts (JSON lines)"),
        ("replay", "queue failed deliveries again, with fresh attempts"),
    ):
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("--config", help="TOML file (see config.example.toml)")
        command.add_argument("--dsn", help="Postgres DSN; overrides the file and the environment")
    api_commands.add_parsers(commands)
    commands.choices["run"].add_argument(
        "--burst", action="store_true", help="exit once nothing is left to deliver now"
    )
    for name in ("failed", "replay"):
        commands.choices[name].add_argument("--webhook", type=int, help="only this webhook id")
    commands.choices["failed"].add_argument("--limit", type=int, default=1000)
    commands.choices["replay"].add_argument(
        "--event", type=int, action="append", help="only this event id (repeatable)"
    )
    args = parser.parse_args(argv)
    try:
        logs.configure(args.log_level)
        config = Config.load(args.config)
    except (ConfigError, ValueError) as exc:
        print(f"webhook-engine: {exc}", file=sys.stderr)
        return 2
    if args.dsn:
        config = replace(config, database=replace(config.database, dsn=args.dsn))
    try:
        if args.command == "init-db":
            return asyncio.run(_init_db(config.database.dsn))
        if args.command == "failed":
            return asyncio.run(_list_failed(config, args.webhook, args.limit))
        if args.command == "replay":
            return asyncio.run(_replay(config, args.webhook, args.event))
        if args.command in api_commands.COMMANDS:
            return run_loop(api_commands.run(args, config))
        return run_loop(daemon.run(config, burst=args.burst))
    except (daemon.SchemaError, ConfigError) as exc:
        print(f"webhook-engine: {exc}", file=sys.stderr)
        return 2
    except (asyncpg.PostgresError, OSError) as exc:
        print(f"webhook-engine: database error: {exc}", file=sys.stderr)
        return 1


async def _list_failed(config: Config, webhook_id: int | None, limit: int) -> int:
    store = await _store(config)
    try:
        for row in await store.list_failed(webhook_id, limit):
            print(orjson.dumps(dict(row), option=orjson.OPT_UTC_Z).decode())
    finally:
        await store.close()
    return 0


async def _replay(config: Config, webhook_id: int | None, event_ids: list[int] | None) -> int:
    store = await _store(config)
    try:
        count = await store.replay_failed(webhook_id, event_ids)
    finally:
        await store.close()
    structlog.get_logger("engine.cli").info(
        "deliveries.replayed", count=count, webhook_id=webhook_id, event_ids=event_ids
    )
    return 0


async def _store(config: Config) -> Store:
    return await Store.open(
        config.database.dsn, pool_size=1, synchronous_commit=config.database.synchronous_commit
    )


async def _init_db(dsn: str | None) -> int:
    try:
        conn = await asyncpg.connect(dsn)
    except asyncpg.InvalidCatalogNameError:
        await _create_database(dsn)
        conn = await asyncpg.connect(dsn)
    try:
        await init_schema(conn)
    finally:
        await conn.close()
    structlog.get_logger("engine.cli").info("schema.ready")
    return 0


async def _create_database(dsn: str | None) -> None:
    """Create the configured database (init-db on a server that does not have it yet)."""
    name = unquote(urlsplit(dsn).path.lstrip("/")) if dsn else os.environ.get("PGDATABASE", "")
    if not name:
        raise asyncpg.InvalidCatalogNameError("the configured database does not exist")
    admin = await asyncpg.connect(dsn, database="postgres")
    try:
        quoted = '"' + name.replace('"', '""') + '"'
        await admin.execute(f"CREATE DATABASE {quoted}")
    finally:
        await admin.close()
    structlog.get_logger("engine.cli").info("database.created", database=name)


if __name__ == "__main__":
    sys.exit(main())
