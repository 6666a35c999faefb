"""Pure: when a failed endpoint is tried again, when a delivery gives up, when an endpoint is
disabled."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import tenacity

from engine.config import RetryConfig
from engine.delivery.backoff import delay_for
from engine.models import Webhook


@dataclass(frozen=True, kw_only=True, slots=True)
class EndpointFailure:
    """An endpoint's state after a flush that recorded failures for it."""

    webhook: Webhook
    consecutive_failures: int
    recent_failures: int  # failures inside the failure window (0 when the window is off)
    retry_after_s: float | None  # from a 429/503 Retry-After header
    gone: bool  # the endpoint answered 410 Gone


@dataclass(frozen=True, kw_only=True, slots=True)
class EndpointDecision:
    delay_s: float
    disable_reason: str | None


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Standard Webhooks' schedule by default: after the n-th consecutive failure an endpoint
    waits schedule_s[n-1] (the last entry from then on), plus up to `jitter` of it at random."""

    schedule_s: tuple[float, ...]
    jitter: float
    retry_after_max_s: float
    max_consecutive_failures: int
    failure_window_max: int
    failure_window_s: float

    @classmethod
    def from_config(cls, config: RetryConfig) -> RetryPolicy:
        return cls(
            schedule_s=config.schedule_s,
            jitter=config.jitter,
            retry_after_max_s=config.retry_after_max_s,
            max_consecutive_failures=config.max_consecutive_failures,
            failure_window_max=config.failure_window_max,
            failure_window_s=config.failure_window_s,
        )

    def schedule_for(self, webhook: Webhook) -> Sequence[float]:
        return webhook.retry_schedule_s or self.schedule_s

    def max_attempts(self, webhook: Webhook) -> int:
        """Attempts a delivery gets before its events are marked failed."""
        return 1 + len(self.schedule_for(webhook)) if webhook.retry else 1

    def delay_s(self, consecutive_failures: int, schedule: Sequence[float] | None = None) -> float:
        if consecutive_failures < 1:
            return 0.0
        steps = schedule or self.schedule_s
        wait = tenacity.wait_chain(
            *(tenacity.wait_fixed(s) + tenacity.wait_random(0, s * self.jitter) for s in steps)
        )
        return delay_for(wait, min(consecutive_failures, len(steps)))

    def window_s(self, webhook: Webhook) -> float | None:
        """The failure window to count failures in, or None when that rule is off."""
        limit = _pick(webhook.failure_window_max, self.failure_window_max)
        if limit <= 0:
            return None
        return float(_pick(webhook.failure_window_s, self.failure_window_s))

    def decide(self, failure: EndpointFailure) -> EndpointDecision:
        webhook = failure.webhook
        delay = self.delay_s(failure.consecutive_failures, self.schedule_for(webhook))
        if failure.retry_after_s is not None:
            delay = min(max(failure.retry_after_s, 0.0), self.retry_after_max_s)
        return EndpointDecision(delay_s=delay, disable_reason=self._disable_reason(failure))

    def _disable_reason(self, failure: EndpointFailure) -> str | None:
        webhook = failure.webhook
        if failure.gone:
            return "HTTP 410 Gone"
        most = _pick(webhook.max_consecutive_failures, self.max_consecutive_failures)
        if most > 0 and failure.consecutive_failures > most:
            return f"more than {most} consecutive failures"
        window_max = _pick(webhook.failure_window_max, self.failure_window_max)
        window_s = _pick(webhook.failure_window_s, self.failure_window_s)
        if window_max > 0 and failure.recent_failures > window_max:
            return f"more than {window_max} failures within {_duration(window_s)}"
        return None


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date; None if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def _pick(own: float | None, default: float) -> float:
    return default if own is None else own


def _duration(seconds: float) -> str:
    if seconds % 3600 == 0:
        return f"{int(seconds // 3600)} h"
    if seconds % 60 == 0:
        return f"{int(seconds // 60)} min"
    return f"{seconds:g} s"
