"""engine.backoff: reconnect delays."""

from __future__ import annotations

import tenacity

from engine.delivery.backoff import Reconnect, delay_for


def test_reconnect_delays_grow_are_capped_and_reset() -> None:
    reconnect = Reconnect(initial_s=0.1, max_s=1.0)
    delays = [reconnect.next_delay_s() for _ in range(10)]
    assert 0.1 <= delays[0] <= 0.2  # initial plus at most initial of jitter
    assert delays[3] >= 0.8  # 0.1 * 2**3
    assert all(d <= 1.0 for d in delays)
    assert delays[-1] == 1.0
    reconnect.reset()
    assert reconnect.next_delay_s() <= 0.2


def test_many_failures_do_not_overflow() -> None:
    reconnect = Reconnect(initial_s=0.1, max_s=5.0)
    for _ in range(10_000):
        delay = reconnect.next_delay_s()
    assert delay == 5.0


def test_delay_for_uses_the_attempt_number() -> None:
    wait = tenacity.wait_chain(tenacity.wait_fixed(1), tenacity.wait_fixed(7))
    assert [delay_for(wait, n) for n in (0, 1, 2, 3)] == [1.0, 1.0, 7.0, 7.0]
