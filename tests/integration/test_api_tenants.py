"""Tenant isolation: a tenant key sees, changes and triggers nothing of another tenant, and
another tenant's resource is 404 (never 403: its existence does not leak)."""

from __future__ import annotations

import asyncpg

from tests.integration.conftest import Api


async def test_a_tenant_key_cannot_touch_another_tenant(api: Api, db: asyncpg.Connection) -> None:
    alice = await api.key("alice")
    bob = await api.key("bob")
    theirs = await api.webhook(topics=["*"], key=bob)
    assert theirs["tenant"] == "bob"
    mine = await api.webhook(topics=["*"], key=alice)
    assert mine["tenant"] == "alice"
    bob_event = await api.ok("POST", "/v1/events", 201, key=bob, json={"topic": "a"})
    await db.execute(
        "INSERT INTO webhook_logs (request_id, webhook_id, event_ids, attempt, delivered_at, "
        "duration_ms, method, url, request_headers, request_body, success) VALUES "
        "(gen_random_uuid(), $1, '{1}', 1, now(), 5, 'POST', 'u', '{}', '', false)",
        theirs["id"],
    )
    request_id = await db.fetchval("SELECT request_id::text FROM webhook_logs")
    await db.execute("UPDATE webhook_queue SET failed_at = now()")
    before = await db.fetchval(
        "SELECT to_jsonb(w)::text FROM webhooks w WHERE id = $1", theirs["id"]
    )
    queue_before = await db.fetchval("SELECT count(*) FROM webhook_queue")

    one = f"/v1/webhooks/{theirs['id']}"
    attempts = [
        ("GET", one, None),
        ("PATCH", one, {"name": "mine now"}),
        ("PUT", one, {"url": "http://127.0.0.1:9/"}),
        ("DELETE", one, None),
        ("GET", one + "/secret", None),
        ("POST", one + "/secret/rotate", None),
        ("POST", one + "/test", None),
        ("GET", one + "/logs", None),
        ("GET", f"{one}/logs/{request_id}", None),
        ("GET", one + "/stats", None),
        ("POST", one + "/replay", {"failed": True}),
        ("POST", one + "/replay", {"since": "2000-01-01T00:00:00Z"}),
        ("GET", f"/v1/events/{bob_event['id']}", None),
    ]
    for method, path, body in attempts:
        answer = await api.call(method, path, key=alice, json=body)
        assert answer.status == 404, (method, path, answer.status, answer.text)
        assert theirs["secret"] not in answer.text
    listed = await api.ok("GET", "/v1/webhooks", key=alice)
    assert [w["id"] for w in listed["data"]] == [mine["id"]]
    assert (await api.ok("GET", "/v1/webhooks", key=alice, params={"tenant": "bob"}))["data"] == []
    assert (await api.ok("GET", "/v1/webhooks/count", key=alice))["count"] == 1
    # Nothing changed, nothing was queued.
    after = await db.fetchval(
        "SELECT to_jsonb(w)::text FROM webhooks w WHERE id = $1", theirs["id"]
    )
    assert after == before
    assert await db.fetchval("SELECT count(*) FROM webhook_queue") == queue_before
    assert await db.fetchval("SELECT count(*) FROM webhook_queue WHERE failed_at IS NULL") == 0


async def test_a_tenant_key_creates_only_in_its_tenant(api: Api, db: asyncpg.Connection) -> None:
    alice = await api.key("alice")
    bobs = await api.webhook(tenant="bob", topics=[])
    refused = await api.call(
        "POST", "/v1/webhooks", key=alice, json={"url": "http://127.0.0.1:9/", "tenant": "bob"}
    )
    assert refused.status == 422 and refused.body["errors"][0]["field"] == "tenant"
    same = await api.webhook(key=alice, tenant="alice")
    assert same["tenant"] == "alice"
    for body in (
        {"topic": "a", "tenant": "bob"},
        {"topic": "a", "webhook_id": bobs["id"]},
    ):
        assert (await api.call("POST", "/v1/events", key=alice, json=body)).status == 422
    event = await api.ok("POST", "/v1/events", 201, key=alice, json={"topic": "a"})
    assert event["tenant"] == "alice"
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 1


async def test_admin_key_sees_every_tenant(api: Api) -> None:
    for tenant in ("", "alice", "bob"):
        await api.webhook(tenant=tenant)
    page = await api.ok("GET", "/v1/webhooks")
    assert sorted(w["tenant"] for w in page["data"]) == ["", "alice", "bob"]
    assert (await api.ok("GET", "/v1/webhooks/count"))["count"] == 3
    default_tenant = await api.key("")
    assert (await api.ok("GET", "/v1/webhooks/count", key=default_tenant))["count"] == 1


async def test_no_secret_in_any_error(api: Api) -> None:
    secret = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA=="
    hook = await api.webhook(secret=secret, auth_type="hmac")
    path = f"/v1/webhooks/{hook['id']}"
    bad_requests = [
        ("PATCH", path, {"secret": secret, "url": "nope"}),
        ("PATCH", path, {"secret": secret, "colour": 1}),
        ("PUT", path, {"secret": secret}),
        ("POST", "/v1/webhooks", {"url": "http://a/", "secret": secret[:-1]}),
        (
            "POST",
            "/v1/webhooks",
            {"url": "ftp://x/", "basic_password": "pw-hunter2", "auth_type": "basic"},
        ),
        ("POST", path + "/secret/rotate", {"secret": secret + "!"}),
    ]
    for method, where, body in bad_requests:
        answer = await api.call(method, where, json=body)
        assert 400 <= answer.status < 500, (answer.status, answer.text)
        assert secret not in answer.text and secret[6:20] not in answer.text
        assert "hunter2" not in answer.text


async def test_an_event_reaches_only_its_own_tenant(api: Api, db: asyncpg.Connection) -> None:
    alice = await api.key("alice")
    bob = await api.key("bob")
    await api.webhook(topics=["order.*"], key=alice)
    bobs = await api.webhook(topics=["order.*"], key=bob)
    await api.ok("POST", "/v1/events", 201, key=alice, json={"topic": "order.created"})
    assert await db.fetchval("SELECT count(*) FROM webhook_queue") == 1
    assert (
        await db.fetchval("SELECT count(*) FROM webhook_queue WHERE webhook_id = $1", bobs["id"])
        == 0
    )
