"""engine.policy: per-endpoint backoff delays."""

from __future__ import annotations

import pytest

from engine.config import BackoffConfig
from engine.policy import EndpointBackoff


def test_no_failures_means_no_delay() -> None:
    backoff = EndpointBackoff(initial_s=5, max_s=100, jitter_s=3)

    assert backoff.delay_s(0) == 0.0
    assert backoff.delay_s(-1) == 0.0


def test_delay_doubles_from_initial() -> None:
    backoff = EndpointBackoff(initial_s=1.5, max_s=1000, jitter_s=0)

    assert [backoff.delay_s(n) for n in range(1, 7)] == [1.5, 3.0, 6.0, 12.0, 24.0, 48.0]


def test_delay_is_capped_at_max() -> None:
    backoff = EndpointBackoff(initial_s=1, max_s=10, jitter_s=0)

    assert [backoff.delay_s(n) for n in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


@pytest.mark.parametrize("failures", [64, 65, 1_000, 10**6, 2**70])
def test_huge_failure_counts_do_not_overflow(failures: int) -> None:
    backoff = EndpointBackoff(initial_s=0.5, max_s=3600, jitter_s=0)

    assert backoff.delay_s(failures) == 3600.0


def test_jitter_stays_within_its_range() -> None:
    backoff = EndpointBackoff(initial_s=1, max_s=100, jitter_s=0.5)

    for n in range(1, 10):
        base = min(2.0 ** (n - 1), 100.0)
        delays = [backoff.delay_s(n) for _ in range(50)]
        assert all(base <= d <= min(base + 0.5, 100.0) for d in delays), (n, delays)


def test_jitter_varies() -> None:
    backoff = EndpointBackoff(initial_s=1, max_s=100, jitter_s=2)

    delays = {backoff.delay_s(1) for _ in range(50)}

    assert len(delays) > 1


def test_jitter_never_exceeds_max() -> None:
    backoff = EndpointBackoff(initial_s=1, max_s=10, jitter_s=5)

    assert all(backoff.delay_s(n) <= 10.0 for n in range(1, 30) for _ in range(10))


def test_from_config() -> None:
    backoff = EndpointBackoff.from_config(BackoffConfig(initial_s=2, max_s=30, jitter_s=0))

    assert backoff == EndpointBackoff(initial_s=2, max_s=30, jitter_s=0)
    assert [backoff.delay_s(n) for n in (1, 2, 5)] == [2.0, 4.0, 30.0]
