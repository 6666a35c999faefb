"""Pure: how long an endpoint waits after consecutive failures."""

from __future__ import annotations

from dataclasses import dataclass

import tenacity

from engine.config import BackoffConfig


@dataclass(frozen=True, kw_only=True)
class EndpointBackoff:
    """Exponential backoff with jitter, from tenacity's wait strategy: after the n-th consecutive
    failure an endpoint waits about initial_s * 2**(n-1) (plus up to jitter_s), at most max_s."""

    initial_s: float
    max_s: float
    jitter_s: float

    @classmethod
    def from_config(cls, config: BackoffConfig) -> EndpointBackoff:
        return cls(initial_s=config.initial_s, max_s=config.max_s, jitter_s=config.jitter_s)

    def delay_s(self, consecutive_failures: int) -> float:
        if consecutive_failures < 1:
            return 0.0
        wait = tenacity.wait_exponential_jitter(
            multiplier=self.initial_s, max=self.max_s, jitter=self.jitter_s
        )
        state = tenacity.RetryCallState(tenacity.Retrying(), fn=None, args=(), kwargs={})
        # Past ~60 doublings every sane max_s is reached; keep the exponent bounded.
        state.attempt_number = min(consecutive_failures, 64)
        return float(wait(state))
