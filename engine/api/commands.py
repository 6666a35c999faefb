"""The command line of the API: `webhook-engine api` (serve it alone) and `webhook-engine
api-key create|list|revoke`."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import orjson
import structlog

from engine.config import Config, ConfigError
from engine.daemon import SchemaError, schema_problem
from engine.db.store import Store

if TYPE_CHECKING:
    from engine.db.api_store import ApiStore

API_HELP = "serve the management API alone"
API_KEY_HELP = "create, list or revoke API keys"


def api_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", help="host:port; overrides [api] listen")


def api_key_arguments(
    parser: argparse.ArgumentParser,
    global_options: Callable[[argparse.ArgumentParser], None],
) -> None:
    """`api-key create|list|revoke`; `global_options` adds --config, --dsn, ... to each action so
    they are accepted after it too."""
    actions = parser.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a key; it is printed once")
    create.add_argument("--tenant", help="only this tenant (default: an admin key, every tenant)")
    create.add_argument("--read-only", action="store_true", help="every write answers 403")
    create.add_argument("--name", default="", help="what the key is for")
    create.add_argument("--json", action="store_true", help="print a JSON object")
    actions.add_parser("list", help="every key, without the key itself (JSON lines)")
    revoke = actions.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("id", type=int)
    for action in actions.choices.values():
        global_options(action)


# The API's modules are imported by the commands that use them, not by every CLI start-up (the
# daemon's included).


async def run(args: argparse.Namespace, config: Config) -> int:
    if args.command == "api":
        return await _serve(config, args.listen)
    from engine.db.api_store import ApiStore

    store = await ApiStore.open(config.database.dsn, pool_size=1)
    try:
        return await _keys(store, args)
    finally:
        await store.close()


async def _serve(config: Config, listen: str | None) -> int:
    listen = listen if listen is not None else config.api.listen
    if not listen:
        raise ConfigError("api.listen is empty: give --listen host:port")
    await _check_schema(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    from engine.api.server import ApiServer

    await ApiServer(replace(config, api=replace(config.api, listen=listen))).run(stop)
    return 0


async def _check_schema(config: Config) -> None:
    store = await Store.open(config.database.dsn, pool_size=1, synchronous_commit="on")
    try:
        problem = schema_problem(await store.schema_version())
    finally:
        await store.close()
    if problem:
        raise SchemaError(problem)


async def _keys(store: ApiStore, args: argparse.Namespace) -> int:
    log = structlog.get_logger("engine.api")
    if args.action == "create":
        key_id, key = await store.create_key(
            tenant=args.tenant, read_only=args.read_only, name=args.name
        )
        if args.json:
            shown = {
                "id": key_id,
                "key": key,
                "tenant": args.tenant,
                "read_only": args.read_only,
                "name": args.name,
            }
            print(orjson.dumps(shown).decode())
        else:
            print(key)
        return 0
    if args.action == "list":
        for api_key in await store.list_keys():
            print(orjson.dumps(api_key, option=orjson.OPT_UTC_Z).decode())
        return 0
    if not await store.revoke_key(args.id):
        print(f"webhook-engine: no active API key with id {args.id}", file=sys.stderr)
        return 2  # a usage error, like any id that names nothing
    log.info("api_key.revoked", id=args.id)
    return 0
