"""Pure: the wire formats of the webhook systems we reproduce, so their existing receivers work
unchanged. Exact formats: the documents in shared/seeds (WooCommerce, UltraCart, ReadyCloud,
Norce Commerce)."""

from __future__ import annotations

import base64
import gzip
import re
import uuid
from typing import Any
from urllib.parse import quote

import orjson

from engine.delivery.batching import BodyFormat, encode_payload, encode_ultracart
from engine.models import Batch, Event, Webhook
from engine.wire import signing

WOOCOMMERCE_USER_AGENT = "WooCommerce/9.4.0 Hookshot (WordPress/6.7)"
NORCE_DEFAULT_BODY = '{"entity": "{{entity}}", "action": "{{action}}", "id": "{{id}}"}'
# Norce's placeholders: always available, then filled from the payload when it has them.
NORCE_PLACEHOLDERS = ("entity", "action", "account", "environment", "id")
NORCE_FROM_PAYLOAD = ("paymentName", "channelName", "channelUrl", "resetKey", "orderRowId")
_PLACEHOLDER = re.compile(r"\{\{\s*([^}]*?)\s*\}\}")
_IDEMPOTENCY_NAMESPACE = uuid.UUID("5b0e8f6e-2c49-4a57-9a3f-5e0b8d3c1a77")

RequestParts = tuple[str, str, bytes, dict[str, str]]  # method, url, body, headers


def body_format(profile: str) -> BodyFormat:
    if profile in ("woocommerce", "readycloud"):
        return BodyFormat(item=encode_payload, array=False)  # one event, the payload itself
    if profile == "ultracart":
        return BodyFormat(item=encode_ultracart, array=True)  # always an array
    if profile == "norce":
        return BodyFormat(item=lambda e: str(_norce_id(e)).encode(), array=True)
    raise ValueError(f"unknown profile {profile!r}")


def is_success(profile: str, status: int) -> bool:
    # ReadyCloud counts only 200 as delivered.
    return status == 200 if profile == "readycloud" else 200 <= status < 300


def auth_headers(webhook: Webhook) -> dict[str, str]:
    if webhook.auth_type == "basic":
        return {
            "Authorization": signing.basic_authorization(
                webhook.basic_username or "", webhook.basic_password or ""
            )
        }
    if webhook.auth_type == "token":
        if not webhook.secret:
            raise ValueError(f"webhook {webhook.id} uses a token but has none")
        return {"Auth": webhook.secret}
    if webhook.auth_type == "none":
        return {}
    raise ValueError(f"webhook {webhook.id} has unknown auth_type {webhook.auth_type!r}")


def request_parts(webhook: Webhook, batch: Batch) -> RequestParts:
    builders = {
        "woocommerce": _woocommerce,
        "ultracart": _ultracart,
        "readycloud": _readycloud,
        "norce": _norce,
    }
    return builders[webhook.profile](webhook, batch)


def _woocommerce(webhook: Webhook, batch: Batch) -> RequestParts:
    if not webhook.secret:
        raise ValueError(f"webhook {webhook.id} (woocommerce) has no secret")
    event = batch.events[0]
    resource, _, action = event.topic.partition(".")
    headers = {
        "User-Agent": webhook.profile_options.get("user_agent", WOOCOMMERCE_USER_AGENT),
        "Content-Type": "application/json",
        "X-WC-Webhook-Source": webhook.profile_options.get("source", ""),
        "X-WC-Webhook-Topic": event.topic,
        "X-WC-Webhook-Resource": resource,
        "X-WC-Webhook-Event": action,
        "X-WC-Webhook-Signature": signing.body_signature(webhook.secret, batch.body),
        "X-WC-Webhook-ID": str(webhook.id),
        "X-WC-Webhook-Delivery-ID": str(event.id),
    }
    return webhook.method, webhook.url, batch.body, headers


def _ultracart(webhook: Webhook, batch: Batch) -> RequestParts:
    body = batch.body
    if webhook.compress_events:
        # UltraCart's compress_events: gzip the events, base64 them, send that as a JSON string.
        body = orjson.dumps(base64.b64encode(gzip.compress(body)).decode())
    headers = {"Content-Type": "application/json", **auth_headers(webhook)}
    return webhook.method, webhook.url, body, headers


def _readycloud(webhook: Webhook, batch: Batch) -> RequestParts:
    headers = {"Content-Type": "application/json", **auth_headers(webhook)}
    return "PUT", webhook.url, batch.body, headers


def _norce(webhook: Webhook, batch: Batch) -> RequestParts:
    values = norce_values(webhook, batch.events)
    url = render(webhook.url, values, url=True)
    body = b""
    if webhook.method not in ("GET", "DELETE"):
        body = render(webhook.body_template or NORCE_DEFAULT_BODY, values).encode()
    first = batch.events[0]
    key = uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f"{webhook.id}:{','.join(map(str, batch.event_ids))}")
    headers = {
        # The same for every retry of these events: receivers drop duplicates on it.
        "x-Idempotency-Key": str(key),
        # When the event was initiated, not when this attempt was made.
        "x-timestamp": orjson.dumps(first.created_at, option=orjson.OPT_UTC_Z).decode().strip('"'),
        **auth_headers(webhook),
    }
    if body:
        headers["Content-Type"] = "application/json"
    return webhook.method, url, body, headers


def norce_values(webhook: Webhook, events: tuple[Event, ...]) -> dict[str, str]:
    """Placeholder values for a batch: entity and action from the topic ("product.update" ->
    Product, update), account and environment from profile_options, id the comma-separated ids
    (the payload's "id", else the event id); the rest from the first payload that has them."""
    entity, _, action = events[0].topic.partition(".")
    values = {
        "entity": entity[:1].upper() + entity[1:],
        "action": action,
        "account": webhook.profile_options.get("account", ""),
        "environment": webhook.profile_options.get("environment", ""),
        "id": ",".join(str(_norce_id(e)) for e in events),
    }
    payloads = [_payload_object(e) for e in events]
    for name in NORCE_FROM_PAYLOAD:
        values[name] = next((str(p[name]) for p in payloads if p.get(name) is not None), "")
    return values


def render(template: str, values: dict[str, str], *, url: bool = False) -> str:
    """Replace {{name}} placeholders; in a URL the values are percent-encoded (ids keep commas)."""

    def value(match: re.Match[str]) -> str:
        text = values.get(match.group(1), "")
        return quote(text, safe=",") if url else text

    return _PLACEHOLDER.sub(value, template)


def _payload_object(event: Event) -> dict[str, Any]:
    try:
        parsed = orjson.loads(event.payload)
    except orjson.JSONDecodeError:  # a number wider than 64 bits, say: no fields to take
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _norce_id(event: Event) -> str | int:
    value = _payload_object(event).get("id")
    return value if isinstance(value, str | int) and not isinstance(value, bool) else event.id
