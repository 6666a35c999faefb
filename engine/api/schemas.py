"""Request and response types of the management API. msgspec validates request bodies and query
strings against them, and the OpenAPI document is generated from them (openapi.py), so the
types here are the contract. Response types list the columns a client may see: a column that is
not here (secret, basic_password, previous_secrets) never leaves the server in a read."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from msgspec import UNSET, Meta, UnsetType

from engine.wire.redact import mask_value

INT32_MAX = 2**31 - 1
BIGINT_MAX = 2**63 - 1

Status = Literal["active", "paused", "disabled"]
AuthType = Literal["hmac", "basic", "none", "token"]
Profile = Literal["standard", "woocommerce", "ultracart", "readycloud", "norce"]
Method = Literal["POST", "PUT", "PATCH", "GET", "DELETE"]
Id = Annotated[int, Meta(ge=1, le=BIGINT_MAX)]
Seconds = Annotated[int, Meta(ge=1, le=INT32_MAX)]
Positive = Annotated[int, Meta(ge=1, le=INT32_MAX)]
Count = Annotated[int, Meta(ge=0, le=INT32_MAX)]
Topic = Annotated[str, Meta(min_length=1, max_length=255, pattern=r"^[^*]+$")]
TopicPattern = Annotated[str, Meta(min_length=1, max_length=255)]
Text = Annotated[str, Meta(max_length=1000)]
Tenant = Annotated[str, Meta(max_length=200)]
PageSize = Annotated[int, Meta(ge=1, le=200)]


class Input(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Request bodies and query strings: an unknown field is an error, never ignored."""


# --- webhooks -------------------------------------------------------------------------------


class WebhookPut(Input):
    """Every column a user sets. Defaults are the schema's column defaults (a test checks), so
    PUT resets what it does not name."""

    url: Annotated[str, Meta(min_length=1, max_length=4000)]
    name: Text = ""
    topics: Annotated[list[TopicPattern], Meta(max_length=1000)] = msgspec.field(
        default_factory=list
    )
    method: Method = "POST"
    status: Status = "active"
    auth_type: AuthType = "hmac"
    secret: Text | None = None
    basic_username: Text | None = None
    basic_password: Text | None = None
    headers: dict[str, Text] = msgspec.field(default_factory=dict)
    maximum_events: Annotated[int, Meta(ge=1, le=10000)] = 1
    maximum_size: Positive = 1000000
    profile: Profile = "standard"
    profile_options: dict[str, Text] = msgspec.field(default_factory=dict)
    compress_events: bool = False
    body_template: Annotated[str, Meta(max_length=100_000)] | None = None
    retry: bool = True
    retry_schedule_s: Annotated[list[Seconds], Meta(min_length=1, max_length=100)] | None = None
    max_consecutive_failures: Count | None = None
    failure_window_max: Count | None = None
    failure_window_s: Seconds | None = None


class WebhookCreate(WebhookPut):
    # Admin keys only; a tenant key's webhooks belong to its tenant.
    tenant: Tenant | None = None


class WebhookPatch(Input):
    url: Annotated[str, Meta(min_length=1, max_length=4000)] | UnsetType = UNSET
    name: Text | UnsetType = UNSET
    topics: Annotated[list[TopicPattern], Meta(max_length=1000)] | UnsetType = UNSET
    method: Method | UnsetType = UNSET
    status: Status | UnsetType = UNSET
    auth_type: AuthType | UnsetType = UNSET
    secret: Text | UnsetType | None = UNSET
    basic_username: Text | UnsetType | None = UNSET
    basic_password: Text | UnsetType | None = UNSET
    headers: dict[str, Text] | UnsetType = UNSET
    maximum_events: Annotated[int, Meta(ge=1, le=10000)] | UnsetType = UNSET
    maximum_size: Positive | UnsetType = UNSET
    profile: Profile | UnsetType = UNSET
    profile_options: dict[str, Text] | UnsetType = UNSET
    compress_events: bool | UnsetType = UNSET
    body_template: Annotated[str, Meta(max_length=100000)] | UnsetType | None = UNSET
    retry: bool | UnsetType = UNSET
    retry_schedule_s: (
        Annotated[list[Seconds], Meta(min_length=1, max_length=100)] | UnsetType | None
    ) = UNSET
    max_consecutive_failures: Count | UnsetType | None = UNSET
    failure_window_max: Count | UnsetType | None = UNSET
    failure_window_s: Seconds | UnsetType | None = UNSET


class Webhook(msgspec.Struct, kw_only=True):
    id: int
    tenant: str
    name: str
    url: str
    method: str
    topics: list[str]
    status: str
    auth_type: str
    basic_username: str | None
    headers: dict[str, str]
    maximum_events: int
    maximum_size: int
    profile: str
    profile_options: dict[str, Any]
    compress_events: bool
    body_template: str | None
    retry: bool
    retry_schedule_s: list[int] | None
    max_consecutive_failures: int | None
    failure_window_max: int | None
    failure_window_s: int | None
    consecutive_failures: int
    next_retry_after: datetime | None
    disabled_at: datetime | None
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime

    def __post_init__(self) -> None:
        # Custom headers may carry credentials (X-Api-Key): masked as in webhook_logs.
        self.headers = {name: mask_value(name, value) for name, value in self.headers.items()}


class WebhookHealth(Webhook, kw_only=True):
    # Counted up to 1,000 so that this read costs the same whatever the backlog; *_more says
    # there are more (GET .../stats counts them all).
    pending: Annotated[int, Meta(description="queued events, counted up to 1,000")]
    pending_more: bool
    failed: Annotated[int, Meta(description="given-up events, counted up to 1,000")]
    failed_more: bool
    last_success_at: datetime | None
    last_failure_at: datetime | None


class WebhookCreated(Webhook, kw_only=True):
    """The answer to POST: the only read that holds the secret and credentials (given or
    generated), besides an explicit GET .../secret."""

    secret: str | None
    basic_password: str | None


class WebhookPage(msgspec.Struct, kw_only=True):
    data: list[Webhook]
    next_cursor: str | None
    has_more: bool


class WebhookListQuery(Input):
    status: Status | None = None
    topic: Topic | None = None
    tenant: Tenant | None = None
    q: Text | None = None
    limit: PageSize = 100
    cursor: Text | None = None


class WebhookCountQuery(Input):
    status: Status | None = None


class WebhookCount(msgspec.Struct, kw_only=True):
    count: int


class SecretRotate(Input):
    # None: generate one (as the schema does for a new webhook).
    secret: Text | None = None


class WebhookSecret(msgspec.Struct, kw_only=True):
    secret: str | None
    basic_username: str | None
    basic_password: str | None


# --- events ---------------------------------------------------------------------------------


class EventIn(Input):
    topic: Topic
    payload: Any = msgspec.field(default_factory=dict)
    webhook_id: Id | None = None
    tenant: Tenant | None = None
    idempotency_key: Annotated[str, Meta(min_length=1, max_length=255)] | None = None


EventsIn = EventIn | Annotated[list[EventIn], Meta(min_length=1, max_length=1000)]


class Event(msgspec.Struct, kw_only=True):
    id: int
    tenant: str
    topic: str
    payload: Any
    webhook_id: int | None
    idempotency_key: str | None = None
    created_at: datetime


class EventList(msgspec.Struct, kw_only=True):
    data: list[Event]


class Delivery(msgspec.Struct, kw_only=True):
    webhook_id: int
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_request_id: UUID | None


class EventStatus(Event, kw_only=True):
    deliveries: list[Delivery]


# --- deliveries: test, logs, stats, replay --------------------------------------------------


class SendTest(Input):
    topic: Topic = "webhook.test"
    payload: Any = msgspec.field(default_factory=lambda: {"test": True})


class SendTestQuery(Input):
    # Seconds to wait for the delivery's log row (0: answer at once).
    wait: Annotated[float, Meta(ge=0, le=5)] = 0


class LogSummary(msgspec.Struct, kw_only=True):
    request_id: UUID
    delivered_at: datetime
    success: bool
    status_code: int | None
    duration_ms: int
    attempt: int
    event_ids: list[int]


class LogRow(LogSummary, kw_only=True):
    webhook_id: int
    method: str
    url: str
    request_headers: dict[str, Any]
    request_body: str
    response_headers: dict[str, Any] | None
    response_body: str | None
    error: str | None
    note: str | None


class SendTestResult(msgspec.Struct, kw_only=True):
    event_id: int
    # None while the delivery has not happened yet (or `wait` was 0).
    log: LogRow | None


class LogPage(msgspec.Struct, kw_only=True):
    data: list[LogSummary]
    next_cursor: str | None
    has_more: bool


class LogListQuery(Input):
    since: datetime | None = None
    until: datetime | None = None
    success: bool | None = None
    limit: PageSize = 100
    cursor: Text | None = None


class StatsQuery(Input):
    since: datetime | None = None


class Stats(msgspec.Struct, kw_only=True):
    since: datetime | None
    delivered: int
    failed_attempts: int
    pending: int
    given_up: int


class ReplayIn(Input):
    """One of: {"failed": true} (given-up deliveries), {"since", "until"} (events from the
    history), {"event_ids": [...]}."""

    failed: bool = False
    since: datetime | None = None
    until: datetime | None = None
    event_ids: Annotated[list[Id], Meta(min_length=1, max_length=10000)] | None = None

    def __post_init__(self) -> None:
        history = self.since is not None or self.until is not None or self.event_ids is not None
        if self.failed == history:
            raise ValueError('give "failed": true, or "since"/"until", or "event_ids"')


class ReplayQuery(Input):
    dry_run: bool = False


class Replayed(msgspec.Struct, kw_only=True):
    count: int
    dry_run: bool


# --- health and errors ----------------------------------------------------------------------


class Health(msgspec.Struct, kw_only=True):
    status: Literal["ok", "unavailable"]


class FieldError(msgspec.Struct, kw_only=True):
    field: str | None
    message: str


class Problem(msgspec.Struct, kw_only=True, omit_defaults=True):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] = msgspec.field(default_factory=list)
