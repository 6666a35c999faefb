"""Webhook rows are refused by our own messages, naming the column and what it may be, and no
error ever carries the row's secret, password or token (Postgres's constraint errors print the
whole failing row in their DETAIL)."""

from __future__ import annotations

import base64
from typing import Any

import asyncpg
import orjson
import pytest

SECRET = "whsec_" + base64.b64encode(b"S3cr3t-key-material-for-tests!!!").decode()
PASSWORD = "pw-Sup3rSecretPassw0rd"
URL = "http://127.0.0.1:9/hook"
JSON_COLUMNS = {"headers", "profile_options", "previous_secrets"}

# (column the error must name, overrides of a valid row)
BAD_ROWS: list[tuple[str, dict[str, Any]]] = [
    ("status", {"status": "sleeping"}),
    ("status", {"status": None}),
    ("auth_type", {"auth_type": "magic"}),
    ("auth_type", {"auth_type": None}),
    ("maximum_events", {"maximum_events": 0}),
    ("maximum_events", {"maximum_events": 10001}),
    ("maximum_events", {"maximum_events": None}),
    ("maximum_size", {"maximum_size": 0}),
    ("maximum_size", {"maximum_size": None}),
    ("url", {"url": None}),
    ("url", {"url": "ftp://example.com/"}),
    ("method", {"method": None}),
    ("method", {"method": "DELETE"}),
    ("tenant", {"tenant": None}),
    ("name", {"name": None}),
    ("topics", {"topics": None}),
    ("topics", {"topics": ["a*b"]}),
    ("topics", {"topics": ["a", None]}),
    ("headers", {"headers": None}),
    ("headers", {"headers": [1]}),
    ("headers", {"headers": {"Authorization": "x"}}),
    ("headers", {"headers": {"X-A": "a\nb"}}),
    ("profile", {"profile": None}),
    ("profile", {"profile": "zapier"}),
    ("profile_options", {"profile_options": None}),
    ("profile_options", {"profile_options": []}),
    ("previous_secrets", {"previous_secrets": None}),
    ("previous_secrets", {"previous_secrets": {}}),
    ("retry", {"retry": None}),
    ("compress_events", {"compress_events": None}),
    ("consecutive_failures", {"consecutive_failures": None}),
    ("consecutive_failures", {"consecutive_failures": -1}),
    ("created_at", {"created_at": None}),
    ("retry_schedule_s", {"retry_schedule_s": [5, 0]}),
    ("max_consecutive_failures", {"max_consecutive_failures": -1}),
    ("failure_window_max", {"failure_window_max": -1}),
    ("failure_window_s", {"failure_window_s": 0}),
    ("body_template", {"body_template": "{}"}),
    ("body_template", {"profile": "norce", "body_template": "{{customer}}"}),
    ("url", {"profile": "norce", "url": "http://127.0.0.1:9/{{customer}}"}),
    ("url", {"profile": "readycloud", "url": "http://127.0.0.1:9/hook"}),
    ("basic_username", {"auth_type": "basic", "basic_username": "a:b"}),
    ("secret", {"secret": SECRET[:20]}),
    ("secret", {"secret": "whsec_" + "!" * 40}),
]


def _value(column: str, value: Any) -> Any:
    return orjson.dumps(value).decode() if column in JSON_COLUMNS and value is not None else value


def _assert_clean(exc: asyncpg.PostgresError, column: str, row: dict[str, Any]) -> None:
    texts = [str(exc), exc.message or "", exc.detail or "", exc.hint or ""]
    secrets = [SECRET, SECRET[6:], PASSWORD, str(row.get("secret"))]
    for text in texts:
        for secret in secrets:
            assert secret not in text, f"{secret!r} leaked in {text!r}"
    assert exc.column_name == column
    assert exc.message.startswith(f"webhooks.{column}"), exc.message


@pytest.mark.parametrize(("column", "overrides"), BAD_ROWS)
async def test_bad_insert_names_the_column_and_never_the_secret(
    db: asyncpg.Connection, column: str, overrides: dict[str, Any]
) -> None:
    row: dict[str, Any] = {"url": URL, "secret": SECRET, "basic_password": PASSWORD, **overrides}
    names = list(row)
    params = ", ".join(f"${i}" for i in range(1, len(names) + 1))
    with pytest.raises(asyncpg.PostgresError) as caught:
        await db.execute(
            f"INSERT INTO webhooks ({', '.join(names)}) VALUES ({params})",
            *(_value(name, row[name]) for name in names),
        )
    _assert_clean(caught.value, column, row)
    assert await db.fetchval("SELECT count(*) FROM webhooks") == 0


@pytest.mark.parametrize(("column", "overrides"), BAD_ROWS)
async def test_bad_update_names_the_column_and_never_the_secret(
    db: asyncpg.Connection, column: str, overrides: dict[str, Any]
) -> None:
    webhook_id = await db.fetchval(
        "INSERT INTO webhooks (url, secret, basic_password) VALUES ($1, $2, $3) RETURNING id",
        URL,
        SECRET,
        PASSWORD,
    )
    names = list(overrides)
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(names, start=2))
    with pytest.raises(asyncpg.PostgresError) as caught:
        await db.execute(
            f"UPDATE webhooks SET {sets} WHERE id = $1",
            webhook_id,
            *(_value(name, overrides[name]) for name in names),
        )
    _assert_clean(caught.value, column, {"secret": SECRET, **overrides})


async def test_generated_secrets_are_32_full_random_bytes(db: asyncpg.Connection) -> None:
    rows = await db.fetch(
        "INSERT INTO webhooks (url) SELECT $1 FROM generate_series(1, 64) RETURNING secret", URL
    )
    keys = [base64.b64decode(row["secret"].removeprefix("whsec_")) for row in rows]
    assert all(len(key) == 32 for key in keys)
    assert len(set(keys)) == 64
    # Two v4 UUIDs put the version nibble 4 in byte 6 (and 14) of every key: no longer.
    assert {key[6] >> 4 for key in keys} != {4}
    assert {key[14] >> 4 for key in keys} != {4}
    raw = await db.fetch("SELECT webhook_engine_random_bytes() AS b FROM generate_series(1, 64)")
    assert all(len(r["b"]) == 32 for r in raw) and len({r["b"] for r in raw}) == 64


async def test_generated_credentials_and_tokens_carry_32_bytes(db: asyncpg.Connection) -> None:
    basic = await db.fetchrow(
        "INSERT INTO webhooks (url, auth_type) VALUES ($1, 'basic') RETURNING basic_password", URL
    )
    woo = await db.fetchrow(
        "INSERT INTO webhooks (url, profile) VALUES ($1, 'woocommerce') RETURNING secret", URL
    )
    assert basic is not None and len(bytes.fromhex(basic["basic_password"])) == 32
    assert woo is not None and len(bytes.fromhex(woo["secret"])) == 32
