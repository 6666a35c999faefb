"""Pure: authentication headers (Standard Webhooks HMAC-SHA256, HTTP basic)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from functools import lru_cache

SECRET_PREFIX = "whsec_"


@lru_cache(maxsize=4096)
def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("secret must start with whsec_")
    encoded = secret[len(SECRET_PREFIX) :]
    key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    if not key:
        raise ValueError("secret holds no key after whsec_")
    return key


@lru_cache(maxsize=4096)
def _keyed(key: bytes) -> hmac.HMAC:
    """An HMAC-SHA256 already keyed with `key`, to copy for each message. hmac.digest sets up
    OpenSSL's HMAC from the digest's name and the key on every call, which cost the daemon
    6.5 us more per request than copying a keyed one (bench/request_path.py, run alternately)."""
    return hmac.new(key, digestmod=hashlib.sha256)


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    mac = _keyed(key).copy()
    mac.update(message)
    return mac.digest()


def standard_signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` over the exact bytes sent."""
    signed = b"%b.%d.%b" % (msg_id.encode(), timestamp, body)
    return "v1," + base64.b64encode(hmac_sha256(key, signed)).decode()


def standard_headers(
    secrets: str | Sequence[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """Standard Webhooks headers; with several secrets (rotation), one `v1,` entry per secret,
    space-separated, so a receiver holding any of them verifies."""
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    signatures = [standard_signature(secret_key(s), msg_id, timestamp, body) for s in keys]
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signatures),
    }


def body_signature(secret: str, body: bytes) -> str:
    """Base64 HMAC-SHA256 of the body, keyed with the secret as it is (WooCommerce)."""
    return base64.b64encode(hmac_sha256(secret.encode(), body)).decode()


def basic_authorization(username: str, password: str) -> str:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return f"Basic {token}"
