"""Domain objects passed between the store, the scheduler, the sender and the recorder."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class Webhook:
    id: int
    url: str
    method: str
    auth_type: str
    secret: str | None
    basic_username: str | None
    basic_password: str | None
    headers: Mapping[str, str]
    maximum_events: int
    maximum_size: int
    consecutive_failures: int
    # Retry and suspension settings; None means the configured default ([retry] section).
    retry: bool = True
    retry_schedule_s: tuple[float, ...] | None = None
    max_consecutive_failures: int | None = None
    failure_window_max: int | None = None
    failure_window_s: float | None = None
    # Wire format and its settings (see profiles.py).
    profile: str = "standard"
    profile_options: Mapping[str, str] = field(default_factory=dict)
    compress_events: bool = False
    body_template: str | None = None
    # Secrets replaced by an update, with when: they keep signing for a while (rotation).
    previous_secrets: tuple[tuple[str, datetime], ...] = ()
    # For operators: log lines and metrics (empty until the ready query selects them).
    name: str = ""
    tenant: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class Event:
    id: int
    topic: str
    created_at: datetime
    # The payload exactly as Postgres renders the jsonb, UTF-8: embedded in bodies without a
    # parse/serialise round trip (which would also refuse integers wider than 64 bits).
    payload: bytes
    attempt: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Batch:
    events: tuple[Event, ...]
    body: bytes
    # True when one event alone is larger than the webhook's maximum_size (sent anyway).
    oversize: bool = False

    @property
    def event_ids(self) -> list[int]:
        return [e.id for e in self.events]

    @property
    def attempt(self) -> int:
        return max(e.attempt for e in self.events)


@dataclass(frozen=True, kw_only=True, slots=True)
class OutgoingRequest:
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class Response:
    """What came back (or did not) for one HTTP request."""

    started_at: datetime
    duration_ms: int
    status_code: int | None
    headers: Mapping[str, str]
    body: str | None
    error: str | None
    # Bytes of the body when `body` holds only its start (None: `body` is whole). Exact unless
    # body_size_known is False: the body was not read to its end and its length was not declared,
    # so it is the bytes read, and the body was longer.
    body_size: int | None = None
    body_size_known: bool = True

    @property
    def success(self) -> bool:
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True, kw_only=True, slots=True)
class LogRow:
    request_id: str  # a UUID
    webhook_id: int
    event_ids: list[int]
    attempt: int
    delivered_at: datetime
    duration_ms: int
    method: str
    url: str
    request_headers: str  # JSON text, credentials masked
    request_body: str
    status_code: int | None
    response_headers: str | None
    response_body: str | None
    success: bool
    error: str | None
    note: str | None
    # Original sizes in bytes of bodies stored cut short; None when the stored body is whole.
    request_body_size: int | None = None
    response_body_size: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Outcome:
    """The result of one batch, for the recorder to write.

    `sent` is False when the batch was never attempted (shutdown before its turn): its lease is
    released and its attempt not counted. `counts` is False for a failure of a request that was
    already in flight when its endpoint was seen failing: concurrent requests to an endpoint that
    went down fail together, and count as one failure, not one each.
    """

    webhook: Webhook
    event_ids: list[int]
    success: bool
    sent: bool
    error: str | None = None
    log: LogRow | None = None
    counts: bool = True
    # The last attempt this delivery gets: on failure its events are marked failed.
    final: bool = False
    retry_after_s: float | None = None
    gone: bool = False

    @property
    def webhook_id(self) -> int:
        return self.webhook.id
