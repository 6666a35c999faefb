"""Pure: delays from tenacity's wait strategies, for the retry schedule and for reconnecting."""

from __future__ import annotations

import tenacity
from tenacity.wait import wait_base


def delay_for(wait: wait_base, attempt: int) -> float:
    """What `wait` says to wait before try number `attempt + 1` (attempt counts from 1)."""
    state = tenacity.RetryCallState(tenacity.Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = max(attempt, 1)
    return float(wait(state))


class Reconnect:
    """Successive delays while a connection stays lost: exponential with jitter, capped.

    `next_delay_s()` after each failure, `reset()` after a success.
    """

    def __init__(self, *, initial_s: float = 0.1, max_s: float = 5.0) -> None:
        self._wait = tenacity.wait_exponential_jitter(
            multiplier=initial_s, max=max_s, jitter=initial_s
        )
        self._failures = 0

    def next_delay_s(self) -> float:
        # Past ~60 doublings every cap is reached; keep the exponent bounded.
        self._failures = min(self._failures + 1, 64)
        return delay_for(self._wait, self._failures)

    def reset(self) -> None:
        self._failures = 0
