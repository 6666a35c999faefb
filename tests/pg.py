"""Find a Postgres server for the tests: WEBHOOK_ENGINE_TEST_DSN, else the local server on
127.0.0.1:5432, else the embedded server that `webhook-engine run` uses when no database is
configured (WEBHOOK_ENGINE_TEST_EMBEDDED=1 forces that, to check the fallback). Each test gets its
own database, cloned from a template that already holds the schema, and dropped afterwards."""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from engine.db.store import init_schema

LOCAL_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def with_database(dsn: str, database: str) -> str:
    """`dsn` pointing at another database (URL form)."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


async def _reachable(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


@contextmanager
def server_dsn() -> Iterator[str]:
    """An admin DSN (may CREATE DATABASE) for the whole test session."""
    explicit = os.environ.get("WEBHOOK_ENGINE_TEST_DSN")
    if explicit:
        yield explicit
        return
    if not os.environ.get("WEBHOOK_ENGINE_TEST_EMBEDDED") and asyncio.run(_reachable(LOCAL_DSN)):
        yield LOCAL_DSN
        return
    with _embedded_server() as dsn:
        yield dsn


@contextmanager
def _embedded_server() -> Iterator[str]:
    """The same embedded Postgres that `webhook-engine run` starts when no database is
    configured (engine/ops/embedded.py), in a throw-away data directory."""
    from engine.ops import embedded

    with (
        tempfile.TemporaryDirectory(prefix="webhook-engine-pg-") as data_dir,
        embedded.serve(Path(data_dir) / "postgres") as connection,
    ):
        yield with_database(connection.dsn, "postgres")


async def create_template(admin_dsn: str) -> str:
    name = f"webhook_engine_tpl_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(with_database(admin_dsn, name))
    try:
        await init_schema(conn)
    finally:
        await conn.close()
    return name


async def create_database(admin_dsn: str, template: str | None) -> str:
    name = f"webhook_engine_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        clause = f' TEMPLATE "{template}"' if template else ""
        await admin.execute(f'CREATE DATABASE "{name}"{clause}')
    finally:
        await admin.close()
    return name


async def drop_database(admin_dsn: str, name: str) -> None:
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
