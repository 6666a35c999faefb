"""engine.profiles: the outgoing request for each auth type."""

from __future__ import annotations

import base64
import dataclasses
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook as Verifier
from standardwebhooks.webhooks import WebhookVerificationError

from engine.delivery.batching import split
from engine.models import Batch, Event, Webhook
from engine.wire.profiles import build_request, message_id

SECRET = "whsec_" + base64.b64encode(b"k" * 24).decode()
USER_AGENT = "webhook-engine/test"


def make_webhook(**changes: Any) -> Webhook:
    webhook = Webhook(
        id=42,
        url="https://receiver.example/hooks",
        method="POST",
        auth_type="hmac",
        secret=SECRET,
        basic_username=None,
        basic_password=None,
        headers={},
        maximum_events=10,
        maximum_size=100_000,
        consecutive_failures=0,
    )
    return dataclasses.replace(webhook, **changes)


def make_batch(*event_ids: int) -> Batch:
    events = [
        Event(
            id=i,
            topic="order.created",
            created_at=datetime(2024, 1, 1, tzinfo=UTC),
            payload=b'{"order": %d}' % i,
            attempt=1,
        )
        for i in event_ids
    ]
    [batch] = split(events, maximum_events=max(len(events), 2), maximum_size=100_000)
    return batch


def lowered(headers: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def test_hmac_request_verifies_with_standardwebhooks() -> None:
    webhook = make_webhook()
    batch = make_batch(5, 6, 9)

    request = build_request(webhook, batch, timestamp=int(time.time()), user_agent=USER_AGENT)

    assert request.method == "POST"
    assert request.url == "https://receiver.example/hooks"
    assert request.body == batch.body
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == USER_AGENT
    assert "Authorization" not in request.headers
    parsed = Verifier(SECRET).verify(request.body, dict(request.headers))
    assert [item["data"]["order"] for item in parsed] == [5, 6, 9]


def test_hmac_signature_covers_the_body() -> None:
    request = build_request(
        make_webhook(), make_batch(1), timestamp=int(time.time()), user_agent=USER_AGENT
    )

    with pytest.raises(WebhookVerificationError):
        Verifier(SECRET).verify(request.body.replace(b"1", b"2"), dict(request.headers))


def test_webhook_id_for_one_event() -> None:
    request = build_request(make_webhook(), make_batch(7), timestamp=1, user_agent=USER_AGENT)

    assert request.headers["webhook-id"] == "msg_7"
    assert message_id(make_batch(7)) == "msg_7"


def test_webhook_id_for_several_events() -> None:
    request = build_request(make_webhook(), make_batch(5, 6, 9), timestamp=1, user_agent=USER_AGENT)

    assert request.headers["webhook-id"] == "msg_5_9_3"


def test_webhook_id_is_stable_across_retries_and_distinct_between_batches() -> None:
    webhook = make_webhook()

    first = build_request(webhook, make_batch(5, 6), timestamp=1000, user_agent=USER_AGENT)
    retry = build_request(webhook, make_batch(5, 6), timestamp=2000, user_agent=USER_AGENT)
    other = build_request(webhook, make_batch(5, 6, 7), timestamp=1000, user_agent=USER_AGENT)

    assert first.headers["webhook-id"] == retry.headers["webhook-id"]
    assert first.headers["webhook-timestamp"] == "1000"
    assert retry.headers["webhook-timestamp"] == "2000"
    assert first.headers["webhook-signature"] != retry.headers["webhook-signature"]
    assert other.headers["webhook-id"] != first.headers["webhook-id"]


def test_hmac_without_secret_is_rejected() -> None:
    with pytest.raises(ValueError, match="secret"):
        build_request(make_webhook(secret=None), make_batch(1), timestamp=1, user_agent=USER_AGENT)


def test_basic_request_has_an_authorization_header() -> None:
    webhook = make_webhook(
        auth_type="basic", secret=None, basic_username="user", basic_password="pass"
    )

    request = build_request(webhook, make_batch(1), timestamp=1, user_agent=USER_AGENT)

    assert request.headers["Authorization"] == "Basic dXNlcjpwYXNz"
    assert request.headers["Content-Type"] == "application/json"
    assert not {"webhook-id", "webhook-signature", "webhook-timestamp"} & set(
        lowered(request.headers)
    )


def test_none_request_has_no_credentials() -> None:
    webhook = make_webhook(auth_type="none", secret=SECRET)

    request = build_request(webhook, make_batch(1, 2), timestamp=1, user_agent=USER_AGENT)

    headers = lowered(request.headers)
    assert "authorization" not in headers
    assert "webhook-signature" not in headers
    assert headers["content-type"] == "application/json"
    assert request.body == make_batch(1, 2).body


@pytest.mark.parametrize("auth_type", ["hmac", "basic", "none"])
def test_custom_headers_are_included(auth_type: str) -> None:
    webhook = make_webhook(
        auth_type=auth_type,
        basic_username="u",
        basic_password="p",
        headers={"X-Tenant": "acme", "X-Trace": "a b c"},
    )

    request = build_request(webhook, make_batch(3), timestamp=1, user_agent=USER_AGENT)

    assert request.headers["X-Tenant"] == "acme"
    assert request.headers["X-Trace"] == "a b c"
    assert request.headers["Content-Type"] == "application/json"


def test_custom_headers_cannot_replace_content_type_or_signature() -> None:
    webhook = make_webhook(headers={"Content-Type": "text/plain", "webhook-signature": "v1,forged"})

    request = build_request(webhook, make_batch(3), timestamp=int(time.time()), user_agent="x")

    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["webhook-signature"] != "v1,forged"
    Verifier(SECRET).verify(request.body, dict(request.headers))


def test_custom_header_differing_only_in_case_is_not_duplicated() -> None:
    webhook = make_webhook(headers={"content-type": "text/plain"})

    request = build_request(webhook, make_batch(3), timestamp=1, user_agent=USER_AGENT)

    content_types = [v for k, v in request.headers.items() if k.lower() == "content-type"]
    assert content_types == ["application/json"]


@pytest.mark.parametrize("auth_type", ["bearer", "HMAC", ""])
def test_unknown_auth_type_is_rejected(auth_type: str) -> None:
    with pytest.raises(ValueError, match="auth_type"):
        build_request(
            make_webhook(auth_type=auth_type), make_batch(1), timestamp=1, user_agent=USER_AGENT
        )
