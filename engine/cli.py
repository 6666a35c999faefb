"""Command line. Subcommands are rows of COMMANDS; global options are accepted before or after
the subcommand; `main` is the one place that turns errors into a line on stderr and an exit code.

Exit codes: 0 done; 1 runtime error (database unreachable or failing, the embedded server did
not start, a daemon task died); 2 usage or configuration error (bad option or value, config
file, DSN, unknown webhook, schema missing or too old); 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn
from urllib.parse import unquote, urlsplit

import asyncpg
import orjson
import structlog

from engine import daemon, logs
from engine.aio import run_loop
from engine.api import commands as api_commands
from engine.config import Config, ConfigError
from engine.db import dsn as dsn_text
from engine.db.ops import OpsReader
from engine.db.store import Store, create_roles, init_schema
from engine.ops import commands as ops_commands
from engine.ops import embedded

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
FAILED_LIMIT_MAX = 100_000
LOG_LEVELS = ("debug", "info", "warning", "error")

log = structlog.get_logger("engine.cli")


class UsageError(Exception):
    """Input the user can correct (an unknown webhook, ...): exit code 2."""


@dataclass(frozen=True, kw_only=True)
class Invocation:
    args: argparse.Namespace
    config: Config


def _no_arguments(_parser: argparse.ArgumentParser) -> None:
    pass


@dataclass(frozen=True, kw_only=True)
class Command:
    name: str
    help: str
    handler: Callable[[Invocation], int]
    arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments
    # Needs a database: with none configured, the embedded one is started for it, with its
    # schema (unless the command creates the schema itself).
    database: bool = True
    creates_schema: bool = False
    # The daemon logs to stdout (journald); other commands keep stdout for their output.
    logs_to_stdout: bool = False


# ---- subcommands -------------------------------------------------------------------------------


def _init_db_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--create-roles",
        action="store_true",
        help="also create the webhook_engine_app and webhook_engine_daemon roles (see README)",
    )


def _init_db_command(invocation: Invocation) -> int:
    return asyncio.run(
        _init_db(invocation.config.database.dsn, with_roles=invocation.args.create_roles)
    )


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--burst", action="store_true", help="exit once nothing is left to deliver now"
    )


def _run_command(invocation: Invocation) -> int:
    return run_loop(daemon.run(invocation.config, burst=invocation.args.burst))


def _failed_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--webhook", type=int, help="only this webhook id")
    parser.add_argument(
        "--limit",
        type=_limit,
        default=1000,
        help=f"at most this many rows, 1 to {FAILED_LIMIT_MAX:,} (default 1,000)",
    )


def _failed_command(invocation: Invocation) -> int:
    args = invocation.args
    return asyncio.run(_list_failed(invocation.config, args.webhook, args.limit))


def _replay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--webhook", type=int, help="only this webhook id")
    parser.add_argument(
        "--event", type=int, action="append", help="only this event id (repeatable)"
    )


def _replay_command(invocation: Invocation) -> int:
    args = invocation.args
    return asyncio.run(_replay(invocation.config, args.webhook, args.event))


def _dsn_command(invocation: Invocation) -> int:
    """The DSN applications insert into: the configured one, else the embedded server's (printed
    even when that server is stopped, since it does not change; stderr says it is stopped)."""
    configured = invocation.config.database.dsn
    if configured:
        print(configured)
        return EXIT_OK
    if _libpq_configured():
        raise UsageError("no DSN is configured: libpq's PG* variables choose the server")
    server = embedded.EmbeddedPostgres(_data_dir(invocation.args))
    print(server.connection().dsn)
    if not server.running():
        print(
            f"webhook-engine: the embedded Postgres in {server.data_dir} is not running "
            "(`webhook-engine run` starts it)",
            file=sys.stderr,
        )
    return EXIT_OK


def _on_loop(
    run: Callable[[argparse.Namespace, Config], Coroutine[Any, Any, int]],
) -> Callable[[Invocation], int]:
    """A command whose work is one coroutine, run on the daemon's event loop."""
    return lambda invocation: run_loop(run(invocation.args, invocation.config))


# The subcommands, in the order `--help` lists them. Add new ones here.
COMMANDS: tuple[Command, ...] = (
    Command(
        name="init-db",
        help="create the schema (safe to run again)",
        handler=_init_db_command,
        arguments=_init_db_arguments,
        creates_schema=True,
    ),
    Command(
        name="run",
        help="deliver webhooks until SIGTERM/SIGINT",
        handler=_run_command,
        arguments=_run_arguments,
        logs_to_stdout=True,
    ),
    Command(
        name="failed",
        help="list deliveries that used all their attempts (JSON lines)",
        handler=_failed_command,
        arguments=_failed_arguments,
    ),
    Command(
        name="replay",
        help="queue failed deliveries again, with fresh attempts",
        handler=_replay_command,
        arguments=_replay_arguments,
    ),
    Command(
        name="status",
        help=ops_commands.STATUS_HELP,
        handler=_on_loop(ops_commands.run),
        arguments=ops_commands.status_arguments,
    ),
    Command(
        name="tail",
        help=ops_commands.TAIL_HELP,
        handler=_on_loop(ops_commands.run),
        arguments=ops_commands.tail_arguments,
    ),
    Command(
        name="api",
        help=api_commands.API_HELP,
        handler=_on_loop(api_commands.run),
        arguments=api_commands.api_arguments,
    ),
    Command(
        name="api-key",
        help=api_commands.API_KEY_HELP,
        handler=_on_loop(api_commands.run),
        arguments=lambda parser: api_commands.api_key_arguments(
            parser, lambda action: _global_options(action, defaults=False)
        ),
    ),
    Command(
        name="dsn",
        help="print the DSN applications insert into (the embedded server's by default)",
        handler=_dsn_command,
        database=False,
    ),
)


# ---- main --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = next(c for c in COMMANDS if c.name == args.command)
    # Until the daemon's own handlers are installed (and after they are gone), SIGTERM unwinds
    # like Ctrl-C, so an embedded server we started is still stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    where = "the database"
    try:
        logs.configure(args.log_level, stream=sys.stdout if command.logs_to_stdout else sys.stderr)
        config = _load_config(args)
        where = dsn_text.describe(config.database.dsn)
        if not command.database:
            return command.handler(Invocation(args=args, config=config))
        with _database(config, args, schema=not command.creates_schema) as config:
            where = dsn_text.describe(config.database.dsn)
            return command.handler(Invocation(args=args, config=config))
    except (UsageError, ConfigError, daemon.SchemaError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except embedded.EmbeddedError as exc:
        return _fail(str(exc), EXIT_RUNTIME)
    except (OSError, TimeoutError) as exc:
        return _fail(f"cannot reach the database at {where}: {_reason(exc)}", EXIT_RUNTIME)
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return _fail(f"database error at {where}: {exc}", EXIT_RUNTIME)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: the usage is one --help away.
        self.exit(EXIT_USAGE, f"webhook-engine: {message} (see `{self.prog} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="webhook-engine", description="Deliver webhooks out of Postgres.")
    parser.add_argument("--version", action="version", version=f"webhook-engine {_version()}")
    _global_options(parser, defaults=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        sub = commands.add_parser(command.name, help=command.help, description=command.help)
        _global_options(sub, defaults=False)
        command.arguments(sub)
    return parser


def _global_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The same options on the main parser and every subcommand: a subcommand's value wins, and
    SUPPRESS keeps its absence from overwriting one given before the subcommand."""

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--log-level", choices=LOG_LEVELS, default=default("info"), help="default info"
    )
    parser.add_argument(
        "--config", default=default(None), help="TOML file (see config.example.toml)"
    )
    parser.add_argument(
        "--dsn",
        default=default(None),
        help="Postgres DSN; overrides WEBHOOK_ENGINE_DSN, the config file and PG* variables",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=default(None),
        help="the embedded Postgres' directory, used when no DSN is configured "
        f"(default {embedded.default_data_dir()})",
    )


def _load_config(args: argparse.Namespace) -> Config:
    config = Config.load(args.config)
    if args.dsn:
        config = replace(config, database=replace(config.database, dsn=args.dsn))
    if config.database.dsn:
        dsn_text.check(config.database.dsn)
    return config


@contextlib.contextmanager
def _database(config: Config, args: argparse.Namespace, *, schema: bool) -> Iterator[Config]:
    """`config` when it names a database (a DSN or libpq's PG* variables); otherwise the
    embedded server, started for the command and stopped after it, with its schema ready."""
    if config.database.dsn or _libpq_configured():
        yield config
        return
    with embedded.serve(_data_dir(args)) as connection:
        if schema:
            asyncio.run(_init_db(connection.dsn))
        log.info(
            "embedded.ready",
            dsn=connection.masked_dsn,
            data_dir=str(_data_dir(args)),
            hint="`webhook-engine dsn` prints this DSN with its password",
        )
        yield replace(config, database=replace(config.database, dsn=connection.dsn))


def _libpq_configured() -> bool:
    return any(os.environ.get(name) for name in dsn_text.LIBPQ_VARIABLES)


def _data_dir(args: argparse.Namespace) -> Path:
    chosen: Path | None = args.data_dir
    return chosen if chosen is not None else embedded.default_data_dir()


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= FAILED_LIMIT_MAX:
        raise argparse.ArgumentTypeError(f"must be from 1 to {FAILED_LIMIT_MAX}, got {value}")
    return value


def _version() -> str:
    try:
        return metadata.version("webhook-engine")
    except metadata.PackageNotFoundError:
        return "unknown"


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _fail(message: str, code: int) -> int:
    print(f"webhook-engine: {message}", file=sys.stderr)
    return code


# ---- database work -----------------------------------------------------------------------------


async def _list_failed(config: Config, webhook_id: int | None, limit: int) -> int:
    store = await _store(config)
    try:
        await _require_webhook(store, webhook_id)
        for row in await store.list_failed(webhook_id, limit):
            print(orjson.dumps(dict(row), option=orjson.OPT_UTC_Z).decode())
    finally:
        await store.close()
    return EXIT_OK


async def _replay(config: Config, webhook_id: int | None, event_ids: list[int] | None) -> int:
    store = await _store(config)
    try:
        await _require_webhook(store, webhook_id)
        count = await store.replay_failed(webhook_id, event_ids)
    finally:
        await store.close()
    log.info("deliveries.replayed", count=count, webhook_id=webhook_id, event_ids=event_ids)
    return EXIT_OK


async def _require_webhook(store: Store, webhook_id: int | None) -> None:
    if webhook_id is not None and not await OpsReader(store.pool).existing_webhooks([webhook_id]):
        raise UsageError(f"there is no webhook with id {webhook_id}")


async def _store(config: Config) -> Store:
    return await Store.open(
        config.database.dsn, pool_size=1, synchronous_commit=config.database.synchronous_commit
    )


async def _init_db(dsn: str | None, *, with_roles: bool = False) -> int:
    try:
        conn = await asyncpg.connect(dsn)
    except asyncpg.InvalidCatalogNameError:
        await _create_database(dsn)
        conn = await asyncpg.connect(dsn)
    try:
        if with_roles:
            await create_roles(conn)
        else:
            await init_schema(conn)
    finally:
        await conn.close()
    log.info("schema.ready", roles_created=with_roles)
    return EXIT_OK


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
    log.info("database.created", database=name)


if __name__ == "__main__":
    sys.exit(main())
