"""Pure: the HTTP request (method, URL, headers, body) for one batch of one webhook."""

from __future__ import annotations

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
    headers: dict[str, str] = {"User-Agent": user_agent}
    headers.update(webhook.headers)
    headers["Content-Type"] = "application/json"
    if webhook.auth_type == "hmac":
        if not webhook.secret:
            raise ValueError(f"webhook {webhook.id} uses hmac but has no secret")
        headers.update(
            signing.standard_headers(webhook.secret, message_id(batch), timestamp, batch.body)
        )
    elif webhook.auth_type == "basic":
        headers["Authorization"] = signing.basic_authorization(
            webhook.basic_username or "", webhook.basic_password or ""
        )
    elif webhook.auth_type != "none":
        raise ValueError(f"webhook {webhook.id} has unknown auth_type {webhook.auth_type!r}")
    return OutgoingRequest(method=webhook.method, url=webhook.url, headers=headers, body=batch.body)
