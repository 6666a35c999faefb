"""Pure: the HTTP request (method, URL, headers, body) for one batch of one webhook."""

from __future__ import annotations

from collections.abc import Mapping

from engine import signing
from engine.models import Batch, OutgoingRequest, Webhook


def message_id(batch: Batch) -> str:
    """Stable across retries of the same batch, so receivers can deduplicate on webhook-id."""
    ids = batch.event_ids
    if len(ids) == 1:
        return f"msg_{ids[0]}"
    return f"msg_{ids[0]}_{ids[-1]}_{len(ids)}"


def build_request(
    webhook: Webhook, batch: Batch, *, timestamp: int, user_agent: str
) -> OutgoingRequest:
    # The webhook's own headers may replace the User-Agent, nothing the engine sets after them.
    headers = _merge({"User-Agent": user_agent}, webhook.headers)
    engine_headers = {"Content-Type": "application/json"}
    if webhook.auth_type == "hmac":
        if not webhook.secret:
            raise ValueError(f"webhook {webhook.id} uses hmac but has no secret")
        engine_headers.update(
            signing.standard_headers(webhook.secret, message_id(batch), timestamp, batch.body)
        )
    elif webhook.auth_type == "basic":
        engine_headers["Authorization"] = signing.basic_authorization(
            webhook.basic_username or "", webhook.basic_password or ""
        )
    elif webhook.auth_type != "none":
        raise ValueError(f"webhook {webhook.id} has unknown auth_type {webhook.auth_type!r}")
    return OutgoingRequest(
        method=webhook.method,
        url=webhook.url,
        headers=_merge(headers, engine_headers),
        body=batch.body,
    )


def _merge(base: Mapping[str, str], override: Mapping[str, str]) -> dict[str, str]:
    """`base` updated with `override`, header names compared case-insensitively."""
    replaced = {name.lower() for name in override}
    merged = {name: value for name, value in base.items() if name.lower() not in replaced}
    merged.update(override)
    return merged
