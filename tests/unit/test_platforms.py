"""engine.platforms and the profile dispatch: each platform's request, as pure values."""

from __future__ import annotations

import base64
import dataclasses
import gzip
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook as Verifier
from standardwebhooks.webhooks import WebhookVerificationError

from engine.delivery.batching import split
from engine.models import Batch, Event, Webhook
from engine.wire import platforms
from engine.wire.profiles import body_format, build_request, is_success

NOW = 1_795_000_000
CREATED = datetime(2026, 11, 24, 12, 0, 0, 123456, tzinfo=UTC)
OLD_SECRET = "whsec_" + base64.b64encode(b"o" * 32).decode()
NEW_SECRET = "whsec_" + base64.b64encode(b"n" * 32).decode()


def webhook(profile: str, **changes: Any) -> Webhook:
    base = Webhook(
        id=9,
        url="http://127.0.0.1:9/hook",
        method="POST",
        auth_type="none",
        secret=None,
        basic_username=None,
        basic_password=None,
        headers={},
        maximum_events=10,
        maximum_size=100_000,
        consecutive_failures=0,
        profile=profile,
    )
    return dataclasses.replace(base, **changes)


def event(event_id: int, payload: dict[str, Any], topic: str = "order.create") -> Event:
    return Event(
        id=event_id,
        topic=topic,
        created_at=CREATED,
        payload=json.dumps(payload).encode(),
        attempt=1,
    )


def batches(w: Webhook, *events: Event) -> list[Batch]:
    return split(list(events), w.maximum_events, w.maximum_size, body_format(w))


def build(w: Webhook, batch: Batch, **kw: Any) -> Any:
    return build_request(w, batch, timestamp=NOW, user_agent="ua/1", **kw)


def test_woocommerce_signs_the_raw_payload_with_the_secret_as_is() -> None:
    w = webhook(
        "woocommerce",
        auth_type="hmac",
        secret="plain-secret",
        maximum_events=1,
        profile_options={"source": "https://shop.example/"},
    )
    [batch] = batches(w, event(5, {"id": 77}, topic="order.updated"))
    request = build(w, batch)
    assert json.loads(request.body) == {"id": 77}
    digest = hmac.new(b"plain-secret", request.body, hashlib.sha256).digest()
    assert request.headers["X-WC-Webhook-Signature"] == base64.b64encode(digest).decode()
    assert request.headers["X-WC-Webhook-Topic"] == "order.updated"
    assert request.headers["X-WC-Webhook-Resource"] == "order"
    assert request.headers["X-WC-Webhook-Event"] == "updated"
    assert request.headers["X-WC-Webhook-ID"] == "9"
    assert request.headers["X-WC-Webhook-Delivery-ID"] == "5"
    assert request.headers["X-WC-Webhook-Source"] == "https://shop.example/"
    assert request.headers["User-Agent"] == platforms.WOOCOMMERCE_USER_AGENT


def test_woocommerce_and_readycloud_send_one_event_per_request() -> None:
    for profile in ("woocommerce", "readycloud"):
        w = webhook(profile, secret="s", auth_type="token", maximum_events=5)
        assert len(batches(w, event(1, {}), event(2, {}), event(3, {}))) == 3


def test_ultracart_array_of_one_key_objects_and_compression() -> None:
    w = webhook(
        "ultracart", maximum_events=2, auth_type="basic", basic_username="u", basic_password="p"
    )
    found = batches(w, event(1, {"a": 1}), event(2, {"b": 2}), event(3, {"c": 3}))
    assert [json.loads(b.body) for b in found] == [
        [{"order_create": {"a": 1}}, {"order_create": {"b": 2}}],
        [{"order_create": {"c": 3}}],
    ]
    request = build(w, found[1])
    assert request.headers["Authorization"] == "Basic dTpw"
    compressed = build(dataclasses.replace(w, compress_events=True), found[0])
    text = json.loads(compressed.body)
    assert json.loads(gzip.decompress(base64.b64decode(text))) == json.loads(found[0].body)


def test_readycloud_put_with_auth_token_and_only_200_succeeds() -> None:
    w = webhook(
        "readycloud",
        auth_type="token",
        secret="a3f7f07de894cd3c2f7f50248ccbd4",
        method="PUT",
        maximum_events=1,
    )
    [batch] = batches(w, event(1, {"primary_id": "1"}))
    request = build(w, batch)
    assert request.method == "PUT" and request.headers["Auth"] == "a3f7f07de894cd3c2f7f50248ccbd4"
    assert json.loads(request.body) == {"primary_id": "1"}
    assert is_success(w, 200) and not is_success(w, 201) and not is_success(w, 204)
    assert is_success(webhook("standard"), 204)


def test_norce_renders_url_and_body_and_keeps_the_idempotency_key() -> None:
    w = webhook(
        "norce",
        url="http://127.0.0.1:9/{{entity}}/{{action}}?ids={{id}}&a={{account}}",
        body_template='{"ids": "{{id}}", "pay": "{{paymentName}}", "env": "{{environment}}"}',
        profile_options={"account": "my shop", "environment": "prod"},
    )
    [batch] = batches(
        w,
        event(1, {"id": 501, "paymentName": "Klarna"}, "capture.create"),
        event(2, {"id": "A-7"}, "capture.create"),
    )
    request = build(w, batch)
    assert request.url == "http://127.0.0.1:9/Capture/create?ids=501,A-7&a=my%20shop"
    assert json.loads(request.body) == {"ids": "501,A-7", "pay": "Klarna", "env": "prod"}
    again = build_request(w, batch, timestamp=NOW + 600, user_agent="ua/1")
    assert request.headers["x-Idempotency-Key"] == again.headers["x-Idempotency-Key"]
    [other] = batches(w, event(3, {"id": 9}, "capture.create"))
    assert build(w, other).headers["x-Idempotency-Key"] != request.headers["x-Idempotency-Key"]
    assert request.headers["x-timestamp"] == "2026-11-24T12:00:00.123456Z"


def test_norce_get_has_no_body_and_ids_fall_back_to_event_ids() -> None:
    w = webhook("norce", method="GET", url="http://127.0.0.1:9/p?ids={{id}}")
    [batch] = batches(w, event(11, {"name": "no id"}, "product.delete"))
    request = build(w, batch)
    assert request.body == b"" and request.url.endswith("?ids=11")
    assert "Content-Type" not in request.headers


def test_norce_default_body_names_entity_action_and_ids() -> None:
    [batch] = batches(webhook("norce"), event(3, {"id": 5}, "order.cancel"))
    request = build(webhook("norce"), batch)
    assert json.loads(request.body) == {"entity": "Order", "action": "cancel", "id": "5"}


def test_standard_rotation_signs_with_every_valid_secret() -> None:
    rotated = datetime.fromtimestamp(NOW, UTC) - timedelta(hours=1)
    w = webhook(
        "standard", auth_type="hmac", secret=NEW_SECRET, previous_secrets=((OLD_SECRET, rotated),)
    )
    [batch] = batches(w, event(1, {}))
    request = build(w, batch)
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    expired = build(w, batch, secret_ttl_s=60)
    assert len(expired.headers["webhook-signature"].split(" ")) == 1


def test_rotation_signatures_verify_with_the_reference_library() -> None:
    import time

    now = int(time.time())
    rotated = datetime.fromtimestamp(now, UTC) - timedelta(hours=1)
    w = webhook(
        "standard", auth_type="hmac", secret=NEW_SECRET, previous_secrets=((OLD_SECRET, rotated),)
    )
    [batch] = batches(w, event(1, {}))
    request = build_request(w, batch, timestamp=now, user_agent="ua/1")
    headers = dict(request.headers)
    Verifier(OLD_SECRET).verify(batch.body, headers)
    Verifier(NEW_SECRET).verify(batch.body, headers)
    third = "whsec_" + base64.b64encode(b"x" * 32).decode()
    with pytest.raises(WebhookVerificationError):
        Verifier(third).verify(batch.body, headers)


def test_unknown_profile_is_rejected() -> None:
    w = webhook("zapier")
    with pytest.raises(ValueError, match="profile"):
        build(w, split([event(1, {})], 1, 1000)[0])


def test_render_leaves_unknown_placeholders_empty_and_encodes_urls() -> None:
    assert platforms.render("{{a}}-{{ b }}-{{c}}", {"a": "x", "b": "y"}) == "x-y-"
    assert platforms.render("/{{a}}", {"a": "a/b c,d"}, url=True) == "/a%2Fb%20c,d"
