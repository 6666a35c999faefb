"""/v1/webhooks against a real server and Postgres: every column, health, pagination, the
secret (rotated, revealed, never in a read)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import orjson

from tests.integration.conftest import Api

EVERY_COLUMN: dict[str, Any] = {
    "url": "http://127.0.0.1:9/every",
    "name": "every column",
    "topics": ["order.*", "refund.created"],
    "method": "PUT",
    "status": "paused",
    "auth_type": "hmac",
    "secret": "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=",
    "headers": {"X-Shop": "s1", "X-Api-Key": "key-in-a-header"},
    "maximum_events": 50,
    "maximum_size": 200000,
    "profile": "standard",
    "profile_options": {"source": "https://shop.example/"},
    "compress_events": False,
    "retry": False,
    "retry_schedule_s": [5, 60],
    "max_consecutive_failures": 7,
    "failure_window_max": 3,
    "failure_window_s": 3600,
}


def assert_no_secret(body: Any, *values: str) -> None:
    text = orjson.dumps(body).decode()
    for word in ("secret", "basic_password", "previous_secrets", "whsec_", *values):
        assert word not in text, (word, text)


async def test_create_with_every_column_then_read_it_back(api: Api, db: asyncpg.Connection) -> None:
    created = await api.webhook(**EVERY_COLUMN)
    assert created["secret"] == EVERY_COLUMN["secret"]  # the create answer holds it, once
    row = await db.fetchrow("SELECT * FROM webhooks WHERE id = $1", created["id"])
    assert row is not None
    for name, value in EVERY_COLUMN.items():
        stored = row[name]
        if name in ("headers", "profile_options"):
            stored = orjson.loads(stored)
        assert stored == value, name
    read = await api.ok("GET", f"/v1/webhooks/{created['id']}")
    assert_no_secret(read, "key-in-a-header")
    assert read["headers"] == {"X-Shop": "s1", "X-Api-Key": "********"}
    for name in set(EVERY_COLUMN) - {"secret", "headers"}:
        assert read[name] == EVERY_COLUMN[name], name
    assert read["tenant"] == ""
    health = {k: read[k] for k in ("pending", "failed", "last_success_at", "last_failure_at")}
    assert health == {"pending": 0, "failed": 0, "last_success_at": None, "last_failure_at": None}
    assert read["consecutive_failures"] == 0 and read["disabled_at"] is None


async def test_generated_credentials_come_back_in_the_create_answer_only(
    api: Api, db: asyncpg.Connection
) -> None:
    hmac = await api.webhook()
    assert hmac["secret"].startswith("whsec_")
    basic = await api.webhook(auth_type="basic")
    assert basic["basic_username"].startswith("webhook_") and len(basic["basic_password"]) == 64
    token = await api.webhook(url="https://127.0.0.1:9/rc", profile="readycloud")
    assert token["auth_type"] == "token" and len(token["secret"]) == 30
    stored = await db.fetchval("SELECT basic_password FROM webhooks WHERE id = $1", basic["id"])
    assert stored == basic["basic_password"]
    page = await api.ok("GET", "/v1/webhooks")
    assert_no_secret(page, basic["basic_password"], token["secret"])
    for hook in (hmac, basic, token):
        credentials = [v for v in (hook["secret"], hook["basic_password"]) if v]
        assert_no_secret(await api.ok("GET", f"/v1/webhooks/{hook['id']}"), *credentials)


async def test_health_counts_pending_failed_and_last_outcomes(
    api: Api, db: asyncpg.Connection
) -> None:
    hook = await api.webhook(topics=["*"])
    await db.execute("INSERT INTO webhook_events (topic) SELECT 'a' FROM generate_series(1, 3)")
    await db.execute(
        "UPDATE webhook_queue SET failed_at = now() WHERE event_id = (SELECT min(event_id) "
        "FROM webhook_queue)"
    )
    await db.execute(
        "INSERT INTO webhook_logs (request_id, webhook_id, event_ids, attempt, delivered_at, "
        "duration_ms, method, url, request_headers, request_body, success) VALUES "
        "(gen_random_uuid(), $1, '{1}', 1, now() - interval '1 minute', 5, 'POST', 'u', '{}', "
        "'', true), (gen_random_uuid(), $1, '{2}', 1, now(), 5, 'POST', 'u', '{}', '', false)",
        hook["id"],
    )
    read = await api.ok("GET", f"/v1/webhooks/{hook['id']}")
    assert (read["pending"], read["failed"]) == (2, 1)
    assert read["last_success_at"] < read["last_failure_at"]


async def test_list_filters_and_count(api: Api) -> None:
    a = await api.webhook(name="Orders EU", topics=["order.*"])
    b = await api.webhook(url="http://127.0.0.1:9/refunds", topics=["refund.created"])
    c = await api.webhook(name="paused one", topics=["*"], status="paused")
    other = await api.webhook(name="acme's", tenant="acme", topics=["order.*"])

    async def ids(**params: str) -> list[int]:
        page = await api.ok("GET", "/v1/webhooks", params=params)
        return [w["id"] for w in page["data"]]

    assert await ids() == [a["id"], b["id"], c["id"], other["id"]]
    assert await ids(status="paused") == [c["id"]]
    assert await ids(topic="order.created") == [a["id"], c["id"], other["id"]]
    assert await ids(q="orders") == [a["id"]]
    assert await ids(q="REFUNDS") == [b["id"]]
    assert await ids(tenant="acme") == [other["id"]]
    assert await ids(tenant="") == [a["id"], b["id"], c["id"]]
    assert (await api.ok("GET", "/v1/webhooks/count"))["count"] == 4
    assert (await api.ok("GET", "/v1/webhooks/count", params={"status": "active"}))["count"] == 3


async def test_pages_are_stable_while_rows_are_inserted(api: Api, db: asyncpg.Connection) -> None:
    await db.execute(
        "INSERT INTO webhooks (url, name) SELECT 'http://127.0.0.1:9/' || g, 'n' || g "
        "FROM generate_series(1, 250) g"
    )
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": "40", **({"cursor": cursor} if cursor else {})}
        page = await api.ok("GET", "/v1/webhooks", params=params)
        seen.extend(w["id"] for w in page["data"])
        pages += 1
        # Others keep inserting between pages.
        await db.execute("INSERT INTO webhooks (url) VALUES ('http://127.0.0.1:9/late')")
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    assert len(seen) == len(set(seen)), "a row appeared twice"
    assert seen == sorted(seen)
    everything = await db.fetchval("SELECT array_agg(id ORDER BY id) FROM webhooks")
    assert seen == everything[: len(seen)] and len(seen) >= 250
    default = await api.ok("GET", "/v1/webhooks")
    assert len(default["data"]) == 100 and default["has_more"]


async def test_patch_changes_only_what_it_names_put_resets_the_rest(api: Api) -> None:
    hook = await api.webhook(name="n", topics=["a"], maximum_events=10, retry_schedule_s=[5])
    path = f"/v1/webhooks/{hook['id']}"
    patched = await api.ok("PATCH", path, json={"status": "paused", "retry_schedule_s": None})
    assert (patched["status"], patched["name"], patched["maximum_events"]) == ("paused", "n", 10)
    assert patched["retry_schedule_s"] is None
    replaced = await api.ok("PUT", path, json={"url": "http://127.0.0.1:9/new"})
    assert replaced["url"] == "http://127.0.0.1:9/new"
    assert (replaced["name"], replaced["topics"], replaced["maximum_events"]) == ("", [], 1)
    assert replaced["status"] == "active"
    refused = await api.call("PATCH", path, json={"url": "nope"})
    assert refused.status == 422 and refused.body["errors"][0]["field"] == "url"
    assert (await api.ok("GET", path))["url"] == "http://127.0.0.1:9/new"


async def test_delete_takes_undelivered_events_with_it(api: Api, db: asyncpg.Connection) -> None:
    hook = await api.webhook(topics=["*"])
    keep = await api.webhook(topics=["*"])
    await db.execute("INSERT INTO webhook_events (topic) VALUES ('a'), ('b')")
    path = f"/v1/webhooks/{hook['id']}"
    answer = await api.call("DELETE", path)
    assert answer.status == 204 and answer.text == ""
    assert (
        await db.fetchval("SELECT count(*) FROM webhook_queue WHERE webhook_id = $1", hook["id"])
        == 0
    )
    assert (
        await db.fetchval("SELECT count(*) FROM webhook_queue WHERE webhook_id = $1", keep["id"])
        == 2
    )
    assert (await api.call("GET", path)).status == 404
    assert (await api.call("DELETE", path)).status == 404


async def test_rotate_keeps_the_old_secret_signing_and_reveal_shows_the_new(
    api: Api, db: asyncpg.Connection
) -> None:
    hook = await api.webhook()
    path = f"/v1/webhooks/{hook['id']}"
    rotated = await api.ok("POST", path + "/secret/rotate")
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != hook["secret"]
    previous = orjson.loads(
        await db.fetchval("SELECT previous_secrets FROM webhooks WHERE id = $1", hook["id"])
    )
    assert [p["secret"] for p in previous] == [hook["secret"]]
    given = "whsec_" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
    assert (await api.ok("POST", path + "/secret/rotate", json={"secret": given}))[
        "secret"
    ] == given
    assert (await api.ok("GET", path + "/secret"))["secret"] == given
    bad = await api.call("POST", path + "/secret/rotate", json={"secret": "whsec_x"})
    assert bad.status == 422 and "whsec_x" not in bad.text
    basic = await api.webhook(auth_type="basic")
    no_secret = await api.call("POST", f"/v1/webhooks/{basic['id']}/secret/rotate")
    assert no_secret.status == 409
    revealed = await api.ok("GET", f"/v1/webhooks/{basic['id']}/secret")
    assert revealed["basic_password"] == basic["basic_password"]
    assert (await api.call("GET", "/v1/webhooks/999999/secret")).status == 404


async def test_concurrent_creates_all_land(api: Api) -> None:
    made = await asyncio.gather(*(api.webhook(name=f"c{i}") for i in range(20)))
    assert len({m["id"] for m in made}) == 20
    assert (await api.ok("GET", "/v1/webhooks/count"))["count"] == 20


async def test_health_counts_stop_at_a_thousand(api: Api, db: asyncpg.Connection) -> None:
    hook = await api.webhook(topics=["*"])
    await db.execute("INSERT INTO webhook_events (topic) SELECT 'a' FROM generate_series(1, 1000)")
    read = await api.ok("GET", f"/v1/webhooks/{hook['id']}")
    assert (read["pending"], read["pending_more"]) == (1000, False)
    await db.execute("INSERT INTO webhook_events (topic) VALUES ('a')")
    read = await api.ok("GET", f"/v1/webhooks/{hook['id']}")
    assert (read["pending"], read["pending_more"], read["failed_more"]) == (1000, True, False)
    stats = await api.ok("GET", f"/v1/webhooks/{hook['id']}/stats")
    assert stats["pending"] == 1001
