"""Deliver one batch: build the request, send it, turn the response into an outcome and log row."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import structlog

from engine.delivery.policy import RetryPolicy, parse_retry_after
from engine.delivery.sender import Sender
from engine.models import Batch, LogRow, Outcome, OutgoingRequest, Response, Webhook
from engine.ops.logfields import endpoint_fields
from engine.wire import profiles
from engine.wire.redact import headers_json, truncate_body

log = structlog.get_logger("engine.worker")


class Worker:
    def __init__(
        self,
        sender: Sender,
        *,
        policy: RetryPolicy,
        user_agent: str,
        log_body_limit_chars: int,
        previous_secret_ttl_s: float = 86400.0,
    ) -> None:
        self._sender = sender
        self._policy = policy
        self._user_agent = user_agent
        self._body_limit = log_body_limit_chars
        self._secret_ttl_s = previous_secret_ttl_s
        # Webhooks already checked for a literal IP in a blocked network: warn once per process.
        self._destination_checked: set[int] = set()

    async def deliver(self, webhook: Webhook, batch: Batch) -> Outcome:
        self._warn_blocked_destination(webhook)
        request_id = str(uuid.uuid4())
        note = _oversize_note(webhook, batch)
        request, response = await self._exchange(webhook, batch)
        row = self._log_row(request_id, webhook, batch, request, response, note)
        gone = response.status_code == 410
        final = (
            not response.success
            and not gone
            and batch.attempt >= self._policy.max_attempts(webhook)
        )
        # The fields of a success's debug line are only put together when it is written.
        if not response.success or note or log.is_enabled_for(logging.DEBUG):
            fields = {
                **endpoint_fields(webhook),
                "request_id": request_id,
                "attempt": batch.attempt,
                "events": len(batch.events),
                "status_code": response.status_code,
                "duration_ms": response.duration_ms,
            }
            if response.success:
                log.debug("delivery.sent", **fields)
            else:
                log.warning("delivery.failed", error=response.error, **fields)
            if note:
                log.warning("delivery.oversize", note=note, **fields)
            if final:
                log.warning(
                    "delivery.gave_up", event_ids=batch.event_ids, error=response.error, **fields
                )
        return Outcome(
            webhook=webhook,
            event_ids=batch.event_ids,
            success=response.success,
            sent=True,
            error=response.error,
            log=row,
            final=final,
            gone=gone,
            retry_after_s=_retry_after(response),
        )

    def _warn_blocked_destination(self, webhook: Webhook) -> None:
        """Say once that a webhook was saved with a literal IP the daemon will never connect to."""
        if webhook.id in self._destination_checked:
            return
        self._destination_checked.add(webhook.id)
        refusal = self._sender.literal_refusal(webhook.url)
        if refusal is not None:
            log.warning("webhook.destination_blocked", webhook_id=webhook.id, error=refusal)

    async def _exchange(self, webhook: Webhook, batch: Batch) -> tuple[OutgoingRequest, Response]:
        """Build the request in the webhook's profile and send it."""
        try:
            request = profiles.build_request(
                webhook,
                batch,
                timestamp=int(time.time()),
                user_agent=self._user_agent,
                secret_ttl_s=self._secret_ttl_s,
            )
        except ValueError as exc:
            # A webhook row we cannot build a request for: a failure like any other, so it
            # backs off and its events stay queued until someone fixes the row.
            request = OutgoingRequest(
                method=webhook.method, url=webhook.url, headers={}, body=batch.body
            )
            return request, Response(
                started_at=datetime.now(UTC),
                duration_ms=0,
                status_code=None,
                headers={},
                body=None,
                error=f"request not built: {exc}",
            )
        response = await self._sender.send(request)
        status = response.status_code
        if response.success and status is not None and not profiles.is_success(webhook, status):
            response = replace(
                response, error=f"HTTP {status}: the {webhook.profile} profile needs 200"
            )
        return request, response

    def _log_row(
        self,
        request_id: str,
        webhook: Webhook,
        batch: Batch,
        request: OutgoingRequest,
        response: Response,
        note: str | None,
    ) -> LogRow:
        request_body, request_cut = truncate_body(request.body, self._body_limit)
        if not response.body_size_known:
            unknown = f"response body longer than {response.body_size} bytes: its size is unknown"
            note = f"{note}; {unknown}" if note else unknown
        return LogRow(
            request_id=request_id,
            webhook_id=webhook.id,
            event_ids=batch.event_ids,
            attempt=batch.attempt,
            delivered_at=response.started_at,
            duration_ms=response.duration_ms,
            method=request.method,
            url=request.url,
            request_headers=headers_json(request.headers),
            request_body=request_body,
            status_code=response.status_code,
            response_headers=headers_json(response.headers) if response.status_code else None,
            response_body=response.body,
            success=response.success,
            error=response.error,
            note=note,
            request_body_size=len(request.body) if request_cut else None,
            response_body_size=response.body_size,
        )


def _retry_after(response: Response) -> float | None:
    """What a 429 or 503 asks for in Retry-After (seconds or an HTTP date), if anything."""
    if response.status_code not in (429, 503):
        return None
    value = next((v for k, v in response.headers.items() if k.lower() == "retry-after"), None)
    return parse_retry_after(value)


def _oversize_note(webhook: Webhook, batch: Batch) -> str | None:
    if not batch.oversize:
        return None
    return (
        f"event {batch.events[0].id} is {len(batch.body)} bytes, over maximum_size "
        f"{webhook.maximum_size}: sent alone"
    )
