"""Pure: the HTTP request (method, URL, headers, body) for one batch of one webhook, in the wire
format of the webhook's profile: `standard` (Standard Webhooks) here, the platforms we reproduce
in platforms.py."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from engine.delivery.batching import BodyFormat
from engine.models import Batch, OutgoingRequest, Webhook
from engine.wire import platforms, signing

PROFILES = ("standard", "woocommerce", "ultracart", "readycloud", "norce")


@dataclass(frozen=True, kw_only=True)
class RequestContext:
    timestamp: int  # Unix seconds, when the request is built
    user_agent: str
    secret_ttl_s: float = 86400.0  # how long a replaced secret keeps signing

    @property
    def now(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp, UTC)


def body_format(webhook: Webhook) -> BodyFormat:
    """How this webhook's events are grouped and encoded into bodies."""
    if webhook.profile == "standard":
        return BodyFormat(array=webhook.maximum_events > 1)
    return platforms.body_format(webhook.profile)


def is_success(webhook: Webhook, status: int) -> bool:
    return platforms.is_success(webhook.profile, status)


def message_id(batch: Batch) -> str:
    """Stable across retries of the same batch, so receivers can deduplicate on webhook-id."""
    ids = batch.event_ids
    if len(ids) == 1:
        return f"msg_{ids[0]}"
    return f"msg_{ids[0]}_{ids[-1]}_{len(ids)}"


def build_request(
    webhook: Webhook,
    batch: Batch,
    *,
    timestamp: int,
    user_agent: str,
    secret_ttl_s: float = 86400.0,
) -> OutgoingRequest:
    ctx = RequestContext(timestamp=timestamp, user_agent=user_agent, secret_ttl_s=secret_ttl_s)
    if webhook.profile == "standard":
        method, url, body, own = (
            webhook.method,
            webhook.url,
            batch.body,
            _standard_headers(webhook, batch, ctx),
        )
    elif webhook.profile in PROFILES:
        method, url, body, own = platforms.request_parts(webhook, batch)
    else:
        raise ValueError(f"webhook {webhook.id} has unknown profile {webhook.profile!r}")
    # The webhook's own headers may replace the User-Agent, nothing the engine sets after them.
    headers = _merge({"User-Agent": user_agent}, webhook.headers)
    return OutgoingRequest(method=method, url=url, headers=_merge(headers, own), body=body)


def valid_secrets(webhook: Webhook, ctx: RequestContext) -> list[str]:
    """The current secret, then replaced ones still inside their rotation window."""
    assert webhook.secret is not None
    if not webhook.previous_secrets:
        return [webhook.secret]
    cutoff = ctx.now - timedelta(seconds=ctx.secret_ttl_s)
    return [webhook.secret] + [s for s, rotated in webhook.previous_secrets if rotated > cutoff]


def _standard_headers(webhook: Webhook, batch: Batch, ctx: RequestContext) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if webhook.auth_type == "hmac":
        if not webhook.secret:
            raise ValueError(f"webhook {webhook.id} uses hmac but has no secret")
        headers.update(
            signing.standard_headers(
                valid_secrets(webhook, ctx), message_id(batch), ctx.timestamp, batch.body
            )
        )
    else:
        headers.update(platforms.auth_headers(webhook))
    return headers


def _merge(base: Mapping[str, str], override: Mapping[str, str]) -> dict[str, str]:
    """`base` updated with `override`, header names compared case-insensitively."""
    if not override:
        return dict(base)  # most webhooks set no headers of their own: once per request
    replaced = {name.lower() for name in override}
    merged = {name: value for name, value in base.items() if name.lower() not in replaced}
    merged.update(override)
    return merged
