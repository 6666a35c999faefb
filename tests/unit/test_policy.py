"""engine.policy: retry schedule, attempts, disabling, Retry-After."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from engine.config import RetryConfig
from engine.delivery.policy import EndpointFailure, RetryPolicy, parse_retry_after
from engine.models import Webhook

STANDARD = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


def policy(**overrides: object) -> RetryPolicy:
    values: dict[str, object] = {
        "schedule_s": STANDARD,
        "jitter": 0.0,
        "retry_after_max_s": 3600.0,
        "max_consecutive_failures": 5,
        "failure_window_max": 0,
        "failure_window_s": 21600.0,
    }
    values.update(overrides)
    return RetryPolicy(**values)  # type: ignore[arg-type]


def webhook(**overrides: object) -> Webhook:
    values: dict[str, object] = {
        "id": 1,
        "url": "http://127.0.0.1:9/",
        "method": "POST",
        "auth_type": "none",
        "secret": None,
        "basic_username": None,
        "basic_password": None,
        "headers": {},
        "maximum_events": 1,
        "maximum_size": 1000,
        "consecutive_failures": 0,
    }
    values.update(overrides)
    return Webhook(**values)  # type: ignore[arg-type]


def failure(w: Webhook, consecutive: int, **overrides: object) -> EndpointFailure:
    values: dict[str, object] = {
        "webhook": w,
        "consecutive_failures": consecutive,
        "recent_failures": 0,
        "retry_after_s": None,
        "gone": False,
    }
    values.update(overrides)
    return EndpointFailure(**values)  # type: ignore[arg-type]


def test_defaults_are_the_standard_webhooks_schedule() -> None:
    assert RetryConfig().schedule_s == STANDARD
    assert RetryPolicy.from_config(RetryConfig()).max_attempts(webhook()) == 8


def test_delay_follows_the_schedule_then_stays_at_its_last_step() -> None:
    p = policy()
    assert p.delay_s(0) == 0.0
    assert [p.delay_s(n) for n in range(1, 10)] == [*STANDARD, 36000.0, 36000.0]
    assert p.delay_s(10**9) == 36000.0


def test_jitter_adds_at_most_its_fraction() -> None:
    p = policy(jitter=0.1)
    delays = {p.delay_s(2) for _ in range(200)}
    assert all(300.0 <= d <= 330.0 for d in delays)
    assert len(delays) > 1, "jitter never varied"


def test_webhook_schedule_and_retry_flag_override_the_default() -> None:
    p = policy()
    own = webhook(retry_schedule_s=(1.0, 2.0))
    assert p.max_attempts(own) == 3
    assert p.decide(failure(own, 2)).delay_s == 2.0
    assert p.decide(failure(own, 5)).delay_s == 2.0
    assert p.max_attempts(webhook(retry=False)) == 1


def test_disabled_after_more_than_n_consecutive_failures() -> None:
    p = policy(max_consecutive_failures=5)
    assert p.decide(failure(webhook(), 5)).disable_reason is None
    assert p.decide(failure(webhook(), 6)).disable_reason == "more than 5 consecutive failures"
    assert policy(max_consecutive_failures=0).decide(failure(webhook(), 99)).disable_reason is None
    own = webhook(max_consecutive_failures=1)
    assert p.decide(failure(own, 2)).disable_reason == "more than 1 consecutive failures"


def test_disabled_after_too_many_failures_in_the_window() -> None:
    p = policy(max_consecutive_failures=0, failure_window_max=3, failure_window_s=21600.0)
    w = webhook()
    assert p.window_s(w) == 21600.0
    assert p.decide(failure(w, 1, recent_failures=3)).disable_reason is None
    reason = p.decide(failure(w, 1, recent_failures=4)).disable_reason
    assert reason == "more than 3 failures within 6 h"
    assert policy().window_s(w) is None
    assert policy().window_s(webhook(failure_window_max=2, failure_window_s=60)) == 60.0


def test_gone_disables_at_once_and_retry_after_is_honoured_but_clamped() -> None:
    p = policy(retry_after_max_s=120.0)
    assert p.decide(failure(webhook(), 1, gone=True)).disable_reason == "HTTP 410 Gone"
    assert p.decide(failure(webhook(), 1, retry_after_s=42.0)).delay_s == 42.0
    assert p.decide(failure(webhook(), 1, retry_after_s=10**6)).delay_s == 120.0


def test_parse_retry_after() -> None:
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90
    assert parse_retry_after(format_datetime(now - timedelta(hours=1), usegmt=True), now) == 0.0
    for bad in (None, "", "soon", "-5", "1.5"):
        assert parse_retry_after(bad, now) is None


@pytest.mark.parametrize("consecutive", [1, 3, 7, 8, 100])
def test_delay_never_exceeds_the_longest_step(consecutive: int) -> None:
    assert policy(jitter=0.1).delay_s(consecutive) <= max(STANDARD) * 1.1
