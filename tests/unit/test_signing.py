"""engine.signing, checked against the independent standardwebhooks package."""

from __future__ import annotations

import base64
import hmac
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from engine.wire.signing import basic_authorization, hmac_sha256, secret_key, standard_headers

KEY = bytes(range(32))
SECRET = "whsec_" + base64.b64encode(KEY).decode()
BODY = (
    b'[{"id":1,"type":"t","timestamp":"2024-01-01T00:00:00Z",'
    b'"data":{"n":123456789012345678901234567890}}]'
)


def test_headers_verify_with_standardwebhooks() -> None:
    timestamp = int(time.time())

    headers = standard_headers(SECRET, "msg_1", timestamp, BODY)

    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-id"] == "msg_1"
    assert headers["webhook-timestamp"] == str(timestamp)
    assert headers["webhook-signature"].startswith("v1,")
    parsed = Webhook(SECRET).verify(BODY, headers)
    assert parsed[0]["data"]["n"] == 123456789012345678901234567890


def test_non_ascii_body_verifies() -> None:
    body = '{"name":"café ☕"}'.encode()

    headers = standard_headers(SECRET, "msg_2", int(time.time()), body)

    assert Webhook(SECRET).verify(body, headers) == {"name": "café ☕"}


def test_tampered_body_fails_verification() -> None:
    headers = standard_headers(SECRET, "msg_1", int(time.time()), BODY)

    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(BODY.replace(b'"t"', b'"u"'), headers)


def test_changed_id_or_timestamp_fails_verification() -> None:
    timestamp = int(time.time())
    headers = standard_headers(SECRET, "msg_1", timestamp, BODY)

    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(BODY, {**headers, "webhook-id": "msg_2"})
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(BODY, {**headers, "webhook-timestamp": str(timestamp - 1)})


def test_other_secret_fails_verification() -> None:
    headers = standard_headers(SECRET, "msg_1", int(time.time()), BODY)
    other = "whsec_" + base64.b64encode(bytes(range(1, 33))).decode()

    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(BODY, headers)


def test_secret_key_decodes_the_base64_part() -> None:
    assert secret_key(SECRET) == KEY


@pytest.mark.parametrize("secret", [base64.b64encode(KEY).decode(), "WHSEC_" + SECRET[6:], ""])
def test_secret_key_requires_the_prefix(secret: str) -> None:
    with pytest.raises(ValueError, match="whsec_"):
        secret_key(secret)


@pytest.mark.parametrize(
    "secret", ["whsec_not*base64!", "whsec_ab$d", "whsec_a", "whsec_abc$d", "whsec_YWJj ZA=="]
)
def test_secret_key_rejects_invalid_base64(secret: str) -> None:
    with pytest.raises(ValueError):
        secret_key(secret)


def test_standard_headers_rejects_a_bad_secret() -> None:
    with pytest.raises(ValueError):
        standard_headers("not-a-secret", "msg_1", int(time.time()), BODY)


def test_basic_authorization() -> None:
    assert basic_authorization("user", "pass") == "Basic dXNlcjpwYXNz"


def test_basic_authorization_round_trips_utf8_and_colons() -> None:
    header = basic_authorization("jürgen", "p:ss wörd")

    scheme, _, token = header.partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(token).decode("utf-8") == "jürgen:p:ss wörd"


def test_empty_key_is_rejected_and_unpadded_base64_accepted() -> None:
    with pytest.raises(ValueError, match="no key"):
        secret_key("whsec_")
    key = bytes(range(25))
    unpadded = "whsec_" + base64.b64encode(key).decode().rstrip("=")
    assert secret_key(unpadded) == key


def test_hmac_sha256_matches_the_standard_library_and_keeps_no_state_between_messages() -> None:
    keys = [b"k", b"\x00" * 32, b"key" * 40]  # short, binary, longer than SHA-256's block
    messages = [b"", b"a", b"a", b"x" * 10_000, b"a"]  # the same message twice, and again later
    for key in keys:
        for message in messages:
            assert hmac_sha256(key, message) == hmac.digest(key, message, "sha256")
