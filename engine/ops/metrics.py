"""Prometheus metrics of one daemon, in a registry of its own (several daemons may share a
process, as in the tests).

Counters move when the recorder has committed outcomes (so they agree with webhook_logs); the
queue and endpoint gauges are read from Postgres when scraped, at most once per
`refresh_min_s`, with bounded queries (engine/db/sql/ops.sql). No label names an endpoint:
with thousands of them, per-endpoint series would swamp Prometheus; `per_tenant` adds a
`tenant` label to the request counters and the endpoint gauge.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from engine.db.ops import OpsReader
from engine.models import Outcome

# A request's outcome, for the `outcome` label: a small fixed set.
OUTCOMES = ("success", "http_error", "timeout", "connection_error", "other")
ENDPOINT_STATES = ("active", "backing_off", "paused", "disabled")
# Each queue count scans at most this many rows per scrape; beyond it, an estimate.
QUEUE_COUNT_CAP = 10_000
_DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_FLUSH_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


def request_outcome(outcome: Outcome) -> str:
    """Pure: which `outcome` label a sent request gets."""
    if outcome.success:
        return "success"
    if outcome.log is not None and outcome.log.status_code is not None:
        return "http_error"
    error = outcome.error or ""
    if error.startswith("timeout"):
        return "timeout"
    if error.startswith(("connection", "TLS", "response body broken off")):
        return "connection_error"
    return "other"


def _for(counter: Counter, labels: list[str]) -> Counter:
    return counter.labels(*labels) if labels else counter


class Metrics:
    def __init__(self, *, per_tenant: bool = False, refresh_min_s: float = 1.0) -> None:
        self.registry = CollectorRegistry()
        self.per_tenant = per_tenant
        self._refresh_min_s = refresh_min_s
        self._refreshed_at: float | None = None
        tenant = ["tenant"] if per_tenant else []
        r = self.registry
        self.requests = Counter(
            "webhook_engine_requests",
            "HTTP requests made to endpoints, by outcome (recorded ones)",
            ["outcome", *tenant],
            registry=r,
        )
        self.request_duration = Histogram(
            "webhook_engine_request_duration_seconds",
            "Duration of HTTP requests to endpoints, until the response was read or failed",
            buckets=_DURATION_BUCKETS_S,
            registry=r,
        )
        self.events_delivered = Counter(
            "webhook_engine_events_delivered", "Events delivered (2xx)", tenant, registry=r
        )
        self.events_given_up = Counter(
            "webhook_engine_events_given_up",
            "Events that used all their attempts and were marked failed",
            tenant,
            registry=r,
        )
        self.in_flight = Gauge(
            "webhook_engine_requests_in_flight",
            "Requests this daemon is sending now (not batches claimed ahead, waiting for a slot)",
            registry=r,
        )
        self.queue_events = Gauge(
            "webhook_engine_queue_events",
            f"Deliveries in the queue (all daemons): pending or failed; exact up to "
            f"{QUEUE_COUNT_CAP}, beyond that the statistics collector's estimate",
            ["state"],
            registry=r,
        )
        self.queue_lag = Gauge(
            "webhook_engine_queue_lag_seconds",
            "Age of the oldest event due now (pending, not leased, endpoint active and not "
            "backing off), from its created_at; 0 when nothing is due",
            registry=r,
        )
        self.endpoints = Gauge(
            "webhook_engine_endpoints",
            "Endpoints by effective state: active, backing_off, paused, disabled",
            ["state", *tenant],
            registry=r,
        )
        self.flush_duration = Histogram(
            "webhook_engine_recorder_flush_duration_seconds",
            "Time to write one batch of outcomes and log rows (one transaction)",
            buckets=_FLUSH_BUCKETS_S,
            registry=r,
        )
        self.database_errors = Counter(
            "webhook_engine_database_errors",
            "Failed statements and failed connection attempts of the daemon's pool, and failed "
            "metric queries",
            registry=r,
        )
        # Every series exists from the start, so rate() and alerts see a 0, not a gap.
        if not per_tenant:
            for name in OUTCOMES:
                self.requests.labels(name)
            for state in ENDPOINT_STATES:
                self.endpoints.labels(state)
        for state in ("pending", "failed"):
            self.queue_events.labels(state)

    def watch_in_flight(self, in_flight: Callable[[], int]) -> None:
        self.in_flight.set_function(lambda: float(in_flight()))

    def count(self, outcomes: Sequence[Outcome]) -> None:
        """Committed outcomes (the recorder's on_flush)."""
        for outcome in outcomes:
            if not outcome.sent:
                continue
            tenant = [outcome.webhook.tenant] if self.per_tenant else []
            self.requests.labels(request_outcome(outcome), *tenant).inc()
            if outcome.log is not None:
                self.request_duration.observe(outcome.log.duration_ms / 1000)
            if outcome.success:
                _for(self.events_delivered, tenant).inc(len(outcome.event_ids))
            elif outcome.final:
                _for(self.events_given_up, tenant).inc(len(outcome.event_ids))

    def flushed(self, duration_s: float) -> None:
        self.flush_duration.observe(duration_s)

    def database_error(self, _error: BaseException | None = None) -> None:
        self.database_errors.inc()

    async def refresh(self, reader: OpsReader) -> None:
        """Read the queue and endpoint gauges from Postgres, unless done within refresh_min_s
        (a burst of scrapes costs one set of queries)."""
        now = time.monotonic()
        if self._refreshed_at is not None and now - self._refreshed_at < self._refresh_min_s:
            return
        self._refreshed_at = now
        depth = await reader.queue_depth(QUEUE_COUNT_CAP)
        self.queue_events.labels("pending").set(depth.pending)
        self.queue_events.labels("failed").set(depth.failed)
        self.queue_lag.set(await reader.oldest_due_age_s() or 0.0)
        states = await reader.endpoint_states(self.per_tenant)
        if self.per_tenant:
            self.endpoints.clear()  # tenants without endpoints any more disappear
        else:
            for state in ENDPOINT_STATES:
                self.endpoints.labels(state).set(0)
        for state, tenant, count in states:
            self.endpoints.labels(state, *([tenant] if self.per_tenant else [])).set(count)

    def exposition(self) -> bytes:
        """The text format, for /metrics."""
        return generate_latest(self.registry)
