"""Each profile against a real receiver that checks the request the way that platform's own
consumers do."""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import trustme
from aiohttp import web
from standardwebhooks.webhooks import Webhook as StandardWebhook
from standardwebhooks.webhooks import WebhookVerificationError
from svix.webhooks import Webhook as SvixWebhook
from svix.webhooks import WebhookVerificationError as SvixVerificationError

from tests.conftest import wait_until
from tests.integration.test_delivery import (
    EngineFactory,
    add_event,
    add_webhook,
    one,
    queue_empty,
)
from tests.receiver import Receiver


async def test_standard_secret_rotation_signs_with_old_and_new(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    webhook_id = await add_webhook(db, receiver.url("/hook"), ["*"])
    old = await db.fetchval("SELECT secret FROM webhooks WHERE id = $1", webhook_id)
    new = await db.fetchval(
        "UPDATE webhooks SET secret = 'whsec_' || encode(webhook_engine_random_bytes(), 'base64')"
        " WHERE id = $1 RETURNING secret",
        webhook_id,
    )
    engine()
    await add_event(db, "order.created", {"n": 1})
    await receiver.wait_for(lambda: len(receiver.requests) == 1)
    request = receiver.requests[0]
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    # A receiver still on the old secret and one already on the new both verify, with either
    # reference library.
    for secret in (old, new):
        StandardWebhook(secret).verify(request.body, request.headers)
        SvixWebhook(secret).verify(request.body, request.headers)

    # Once the old secret's time is up, it no longer signs.
    await db.execute(
        "UPDATE webhooks SET previous_secrets = jsonb_build_array(jsonb_build_object("
        "'secret', $2::text, 'rotated_at', now() - interval '2 days')) WHERE id = $1",
        webhook_id,
        old,
    )
    await add_event(db, "order.created", {"n": 2})
    await receiver.wait_for(lambda: len(receiver.requests) == 2)
    latest = receiver.requests[1]
    assert len(latest.headers["webhook-signature"].split(" ")) == 1
    SvixWebhook(new).verify(latest.body, latest.headers)
    with pytest.raises(WebhookVerificationError):
        StandardWebhook(old).verify(latest.body, latest.headers)
    with pytest.raises(SvixVerificationError):
        SvixWebhook(old).verify(latest.body, latest.headers)


async def test_woocommerce(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    row = await one(
        db,
        "INSERT INTO webhooks (url, topics, profile, profile_options, maximum_events) "
        "VALUES ($1, '{order.*}', 'woocommerce', '{\"source\": \"https://shop.example/\"}', 10) "
        "RETURNING id, secret, maximum_events",
        receiver.url("/wc"),
    )
    assert row["maximum_events"] == 1  # WooCommerce sends one event per request
    payloads = [{"id": 7, "status": "processing"}, {"id": 8, "total": "19.99"}]
    event_ids = [await add_event(db, "order.updated", p) for p in payloads]
    engine()
    await wait_until(lambda: queue_empty(db), what="delivered")
    by_delivery = {int(r.headers["X-WC-Webhook-Delivery-ID"]): r for r in receiver.requests}
    assert sorted(by_delivery) == event_ids
    for event_id, payload in zip(event_ids, payloads, strict=True):
        request = by_delivery[event_id]
        # What a WooCommerce consumer checks: base64 HMAC-SHA256 of the raw body, keyed with
        # the secret as it is.
        expected = base64.b64encode(
            hmac.new(row["secret"].encode(), request.body, hashlib.sha256).digest()
        ).decode()
        assert hmac.compare_digest(request.headers["X-WC-Webhook-Signature"], expected)
        assert json.loads(request.body) == payload  # the payload itself, no envelope
        assert request.headers["X-WC-Webhook-Topic"] == "order.updated"
        assert request.headers["X-WC-Webhook-Resource"] == "order"
        assert request.headers["X-WC-Webhook-Event"] == "updated"
        assert request.headers["X-WC-Webhook-ID"] == str(row["id"])
        assert request.headers["X-WC-Webhook-Source"] == "https://shop.example/"
        assert request.headers["User-Agent"].startswith("WooCommerce/")
        assert "Hookshot" in request.headers["User-Agent"]
        assert "webhook-signature" not in request.headers


async def test_woocommerce_disables_after_more_than_five_failures(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    async def down(_request: web.Request, _body: bytes) -> web.StreamResponse:
        return web.Response(status=500)

    receiver.on("/wc", down)
    webhook_id = await db.fetchval(
        "INSERT INTO webhooks (url, topics, profile) VALUES ($1, '{*}', 'woocommerce') "
        "RETURNING id",
        receiver.url("/wc"),
    )
    await add_event(db, "order.created", {})
    # The daemon-wide rule is off here: the profile's own "more than 5" applies.
    engine(retry={"schedule_s": [0.05] * 10, "max_consecutive_failures": 0})

    async def disabled() -> bool:
        row = await one(db, "SELECT status FROM webhooks WHERE id = $1", webhook_id)
        return bool(row["status"] == "disabled")

    await wait_until(disabled, within_s=15, what="disabled")
    row = await one(db, "SELECT * FROM webhooks WHERE id = $1", webhook_id)
    assert row["consecutive_failures"] == 6
    assert row["disabled_reason"] == "more than 5 consecutive failures"


async def test_ultracart_batches_basic_auth_and_compression(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    plain = await one(
        db,
        "INSERT INTO webhooks (url, topics, profile, maximum_events) "
        "VALUES ($1, '{*}', 'ultracart', 3) RETURNING auth_type, basic_username, basic_password",
        receiver.url("/plain"),
    )
    assert plain["auth_type"] == "basic" and plain["basic_username"] and plain["basic_password"]
    await db.execute(
        "INSERT INTO webhooks (url, topics, profile, maximum_events, compress_events, auth_type) "
        "VALUES ($1, '{*}', 'ultracart', 10, true, 'none')",
        receiver.url("/gzip"),
    )
    payloads = [{"order_id": f"DEMO-{n}"} for n in range(5)]
    for payload in payloads:
        await add_event(db, "order.create", payload)
    engine(delivery={"per_endpoint_concurrency": 1})
    await wait_until(lambda: queue_empty(db), what="delivered")

    credentials = f"{plain['basic_username']}:{plain['basic_password']}".encode()
    expected_auth = "Basic " + base64.b64encode(credentials).decode()
    batches = []
    for request in receiver.at("/plain"):
        assert request.headers["Authorization"] == expected_auth
        batches.append(json.loads(request.body))
    assert [len(b) for b in batches] == [3, 2]
    assert [item for b in batches for item in b] == [{"order_create": p} for p in payloads]

    (compressed,) = receiver.at("/gzip")
    assert "Authorization" not in compressed.headers
    encoded = json.loads(compressed.body)
    assert isinstance(encoded, str)
    events = json.loads(gzip.decompress(base64.b64decode(encoded)))
    assert events == [{"order_create": p} for p in payloads]


@pytest.fixture
def tls(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A server certificate for 127.0.0.1 from a throwaway CA, and that CA as a PEM bundle."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    return context, bundle


@pytest.fixture
async def https_receiver(tls: tuple[ssl.SSLContext, Path]) -> AsyncIterator[Receiver]:
    receiver = Receiver(ssl_context=tls[0])
    await receiver.start()
    yield receiver
    await receiver.stop()


async def test_readycloud_put_with_auth_token_over_https(
    db: asyncpg.Connection,
    https_receiver: Receiver,
    tls: tuple[ssl.SSLContext, Path],
    engine: EngineFactory,
) -> None:
    with pytest.raises(asyncpg.PostgresError, match="need an https:// URL"):
        await db.execute(
            "INSERT INTO webhooks (url, profile) VALUES ('http://127.0.0.1:9/', 'readycloud')"
        )
    row = await one(
        db,
        "INSERT INTO webhooks (url, topics, profile) VALUES ($1, '{*}', 'readycloud') "
        "RETURNING secret, method, auth_type",
        https_receiver.url("/rc"),
    )
    assert row["method"] == "PUT" and row["auth_type"] == "token" and len(row["secret"]) == 30
    payload = {"primary_id": "127283", "boxes": []}
    await add_event(db, "orders.updated", payload)
    engine(delivery={"ca_bundle": str(tls[1])})
    await wait_until(lambda: queue_empty(db), what="delivered")
    (request,) = https_receiver.requests
    assert request.method == "PUT"
    assert request.headers["Auth"] == row["secret"]
    assert json.loads(request.body) == payload


async def test_readycloud_only_200_counts_and_suspends_after_three_in_six_hours(
    db: asyncpg.Connection,
    https_receiver: Receiver,
    tls: tuple[ssl.SSLContext, Path],
    engine: EngineFactory,
) -> None:
    async def created(_request: web.Request, _body: bytes) -> web.StreamResponse:
        return web.Response(status=201)

    https_receiver.on("/rc", created)
    webhook_id = await db.fetchval(
        "INSERT INTO webhooks (url, topics, profile, retry_schedule_s) "
        "VALUES ($1, '{*}', 'readycloud', '{1,1,1,1,1,1}') RETURNING id",
        https_receiver.url("/rc"),
    )
    await add_event(db, "orders.updated", {})
    engine(delivery={"ca_bundle": str(tls[1])})

    async def suspended() -> bool:
        row = await one(db, "SELECT status FROM webhooks WHERE id = $1", webhook_id)
        return bool(row["status"] == "disabled")

    await wait_until(suspended, within_s=20, what="suspended")
    row = await one(db, "SELECT * FROM webhooks WHERE id = $1", webhook_id)
    assert row["disabled_reason"] == "more than 3 failures within 6 h"
    assert row["disabled_at"] is not None
    assert len(https_receiver.requests) == 4
    errors = {r["error"] for r in await db.fetch("SELECT error FROM webhook_logs")}
    assert errors == {"HTTP 201: the readycloud profile needs 200"}


async def test_norce_templates_idempotency_and_retries(
    db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    calls = {"n": 0}

    async def flaky(_request: web.Request, _body: bytes) -> web.StreamResponse:
        calls["n"] += 1
        return web.Response(status=500 if calls["n"] == 1 else 200)

    receiver.on("/Product/update", flaky)
    template = (
        '{"account": "{{account}}", "env": "{{environment}}", "ids": "{{id}}", '
        '"channel": "{{channelName}}", "what": "{{entity}}/{{action}}"}'
    )
    row = await one(
        db,
        "INSERT INTO webhooks (url, topics, profile, profile_options, body_template, "
        "maximum_events, retry_schedule_s) VALUES ($1, '{product.*}', 'norce', "
        '\'{"account": "demo-shop", "environment": "qa"}\', $2, 5, \'{1,1,1}\') '
        "RETURNING id, auth_type, retry",
        receiver.url("/{{entity}}/{{action}}?ids={{id}}"),
        template,
    )
    assert row["auth_type"] == "none" and row["retry"]
    first = await add_event(db, "product.update", {"id": 101, "channelName": "web"})
    await add_event(db, "product.update", {"id": 102})
    created = await db.fetchval("SELECT created_at FROM webhook_events WHERE id = $1", first)
    engine(delivery={"per_endpoint_concurrency": 1})
    await wait_until(lambda: queue_empty(db), what="delivered after one retry")
    attempts = receiver.at("/Product/update")
    assert len(attempts) == 2
    for request in attempts:
        assert json.loads(request.body) == {
            "account": "demo-shop",
            "env": "qa",
            "ids": "101,102",
            "channel": "web",
            "what": "Product/update",
        }
    # Identical across retries of the same events; the time the event was initiated.
    assert attempts[0].headers["x-Idempotency-Key"] == attempts[1].headers["x-Idempotency-Key"]
    stamp = attempts[0].headers["x-timestamp"]
    assert stamp == created.isoformat(timespec="microseconds").replace("+00:00", "Z")
    logged = await db.fetch("SELECT url FROM webhook_logs ORDER BY delivered_at")
    assert all(r["url"].endswith("/Product/update?ids=101,102") for r in logged)


async def test_norce_rejects_unknown_placeholders_when_saved(db: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.PostgresError, match=r"unknown placeholder \{\{customer\}\}"):
        await db.execute(
            "INSERT INTO webhooks (url, profile, body_template) "
            "VALUES ('http://127.0.0.1:9/', 'norce', '{\"c\": \"{{customer}}\"}')"
        )
    with pytest.raises(asyncpg.PostgresError, match="unknown placeholder"):
        await db.execute(
            "INSERT INTO webhooks (url, profile) VALUES ('http://127.0.0.1:9/{{who}}', 'norce')"
        )
    with pytest.raises(asyncpg.PostgresError, match="norce profile only"):
        await db.execute(
            "INSERT INTO webhooks (url, body_template) VALUES ('http://127.0.0.1:9/', '{}')"
        )
