"""init-db --create-roles: an application role that may only insert events, a daemon role with
what delivery needs; event intake works for the application through the SECURITY DEFINER
fan-out."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import pytest

from engine.db.store import Store, create_roles, init_schema
from tests.conftest import RunningEngine, make_config, wait_until
from tests.integration.test_processes import run_cli
from tests.receiver import Receiver

URL = "http://127.0.0.1:9/hook"


@pytest.fixture
async def roles_db(db: asyncpg.Connection) -> asyncpg.Connection:
    await create_roles(db)
    return db


def as_user(dsn: str, user: str, password: str) -> str:
    parts = urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{quote(user)}:{quote(password)}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@pytest.fixture
async def login_as(
    admin_dsn: str,
) -> AsyncIterator[list[str]]:
    """Names of throwaway login roles a test made; dropped afterwards."""
    made: list[str] = []
    yield made
    admin = await asyncpg.connect(admin_dsn)
    try:
        for name in made:
            await admin.execute(f'DROP ROLE IF EXISTS "{name}"')
    finally:
        await admin.close()


async def test_init_db_create_roles_is_idempotent(empty_dsn: str) -> None:
    for _ in range(2):
        code, output = await run_cli("init-db", "--create-roles", "--dsn", empty_dsn)
        assert code == 0, output
    conn = await asyncpg.connect(empty_dsn)
    try:
        rows = await conn.fetch(
            "SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname LIKE 'webhook_engine_%' "
            "ORDER BY rolname"
        )
        assert [(r["rolname"], r["rolcanlogin"]) for r in rows] == [
            ("webhook_engine_app", False),
            ("webhook_engine_daemon", False),
        ]
        app_rights = await conn.fetch(
            "SELECT table_name, privilege_type FROM information_schema.role_table_grants "
            "WHERE grantee = 'webhook_engine_app'"
        )
        assert [(r["table_name"], r["privilege_type"]) for r in app_rights] == [
            ("webhook_events", "INSERT")
        ]
    finally:
        await conn.close()


async def test_the_app_role_inserts_events_that_reach_the_queue(
    roles_db: asyncpg.Connection,
) -> None:
    db = roles_db
    topical = await db.fetchval(
        "INSERT INTO webhooks (url, topics) VALUES ($1, '{order.*}') RETURNING id", URL
    )
    targeted = await db.fetchval("INSERT INTO webhooks (url) VALUES ($1) RETURNING id", URL)

    async with db.transaction():
        await db.execute("SET LOCAL ROLE webhook_engine_app")
        await db.execute("INSERT INTO webhook_events (topic) VALUES ('order.created')")
        await db.execute(
            "INSERT INTO webhook_events (topic, webhook_id) VALUES ('x', $1)", targeted
        )
        with pytest.raises(asyncpg.ForeignKeyViolationError, match="does not name a webhook"):
            async with db.transaction():
                await db.execute("INSERT INTO webhook_events (topic, webhook_id) VALUES ('x', 0)")

    queued = await db.fetch("SELECT webhook_id FROM webhook_queue ORDER BY event_id")
    assert [r["webhook_id"] for r in queued] == [topical, targeted]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT secret FROM webhooks",
        "SELECT basic_password FROM webhooks",
        "SELECT id FROM webhooks",
        "SELECT * FROM webhook_logs",
        "SELECT * FROM webhook_queue",
        "SELECT payload FROM webhook_events",
        "UPDATE webhooks SET url = 'http://127.0.0.1:9/other'",
        "INSERT INTO webhooks (url) VALUES ('http://127.0.0.1:9/mine')",
        "DELETE FROM webhook_events",
        "INSERT INTO webhook_queue (webhook_id, event_id) VALUES (1, 1)",
        "SELECT webhook_engine_fan_out()",
    ],
)
async def test_the_app_role_can_do_nothing_else(roles_db: asyncpg.Connection, sql: str) -> None:
    db = roles_db
    await db.execute("INSERT INTO webhooks (url, secret) VALUES ($1, NULL)", URL)
    await db.execute("SET ROLE webhook_engine_app")
    try:
        with pytest.raises((asyncpg.InsufficientPrivilegeError, asyncpg.FeatureNotSupportedError)):
            await db.execute(sql)
    finally:
        await db.execute("RESET ROLE")


async def test_a_daemon_logged_in_with_the_daemon_role_delivers(
    roles_db: asyncpg.Connection,
    dsn: str,
    receiver: Receiver,
    login_as: list[str],
) -> None:
    db = roles_db
    name = f"webhook_engine_test_daemon_{secrets.token_hex(4)}"
    password = secrets.token_hex(16)
    login_as.append(name)
    await db.execute(
        f"CREATE ROLE {name} LOGIN PASSWORD '{password}' IN ROLE webhook_engine_daemon"
    )
    ok = await db.fetchval(
        "INSERT INTO webhooks (url, topics) VALUES ($1, '{a}') RETURNING id", receiver.url("/ok")
    )
    failing = await db.fetchval(
        "INSERT INTO webhooks (url, topics, retry) VALUES ($1, '{a}', false) RETURNING id",
        "http://127.0.0.1:9/closed",
    )
    await db.execute("INSERT INTO webhook_events (topic) SELECT 'a' FROM generate_series(1, 3)")

    running = RunningEngine(make_config(as_user(dsn, name, password)))
    try:
        await receiver.wait_for(lambda: len(receiver.requests) == 3, what="3 deliveries")

        async def settled() -> bool:
            pending = await db.fetchval(
                "SELECT count(*) FROM webhook_queue WHERE failed_at IS NULL"
            )
            logged = await db.fetchval("SELECT count(*) FROM webhook_logs")
            return bool(pending == 0 and logged == 6)

        await wait_until(settled, what="every delivery settled and logged")
    finally:
        assert await running.stop() == 0
    health = await db.fetchval("SELECT consecutive_failures FROM webhooks WHERE id = $1", failing)
    assert health >= 1
    assert await db.fetchval("SELECT consecutive_failures FROM webhooks WHERE id = $1", ok) == 0


async def test_every_trigger_function_on_events_runs_as_owner_with_a_fixed_path(
    db: asyncpg.Connection,
) -> None:
    # A trigger function added later (by another section of schema.sql) is covered on re-run.
    await db.execute(
        "CREATE FUNCTION extra_event_trigger() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RETURN NULL; END $$"
    )
    await db.execute(
        "CREATE TRIGGER extra AFTER INSERT ON webhook_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION extra_event_trigger()"
    )
    await init_schema(db)

    rows = await db.fetch(
        "SELECT p.proname, p.prosecdef, p.proconfig FROM pg_trigger AS t "
        "JOIN pg_proc AS p ON p.oid = t.tgfoid "
        "WHERE t.tgrelid = 'webhook_events'::regclass AND NOT t.tgisinternal"
    )
    assert {r["proname"] for r in rows} >= {"webhook_engine_fan_out", "extra_event_trigger"}
    for row in rows:
        assert row["prosecdef"], row["proname"]
        assert row["proconfig"] == ["search_path=public, pg_temp"], row["proname"]


async def test_the_daemon_role_is_told_when_it_may_not_vacuum_the_queue(
    roles_db: asyncpg.Connection, dsn: str, login_as: list[str]
) -> None:
    db = roles_db
    name = f"webhook_engine_test_daemon_{secrets.token_hex(4)}"
    password = secrets.token_hex(16)
    login_as.append(name)
    await db.execute(
        f"CREATE ROLE {name} LOGIN PASSWORD '{password}' IN ROLE webhook_engine_daemon"
    )
    maintain = int(await db.fetchval("SHOW server_version_num")) >= 170000

    owner = await Store.open(dsn, pool_size=1, synchronous_commit="on")
    daemon = await Store.open(as_user(dsn, name, password), pool_size=1, synchronous_commit="on")
    try:
        await owner.vacuum("webhook_queue")
        if maintain:
            await daemon.vacuum("webhook_queue")
        else:
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="owner of webhook_queue"):
                await daemon.vacuum("webhook_queue")
    finally:
        await owner.close()
        await daemon.close()
