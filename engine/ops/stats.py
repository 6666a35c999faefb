"""A periodic summary line for operators tailing the logs: what was delivered since the last one.

Successful deliveries are logged at debug level only (one line per request would drown the log at
thousands per second); this line says how the daemon is doing at info level."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from engine.aio import wait_first
from engine.models import Outcome

log = structlog.get_logger("engine.stats")


@dataclass
class DeliveryStats:
    """Counts of committed outcomes, reset by each summary."""

    requests: int = 0
    delivered_events: int = 0
    failed_requests: int = 0
    gave_up_events: int = 0
    webhooks: set[int] = field(default_factory=set)

    def count(self, outcomes: Sequence[Outcome]) -> None:
        for outcome in outcomes:
            if not outcome.sent:
                continue
            self.requests += 1
            self.webhooks.add(outcome.webhook_id)
            if outcome.success:
                self.delivered_events += len(outcome.event_ids)
            else:
                self.failed_requests += 1
                if outcome.final:
                    self.gave_up_events += len(outcome.event_ids)


class StatsLogger:
    """Logs `delivery.summary` every `every_s` seconds when anything happened."""

    def __init__(self, every_s: float, in_flight: Callable[[], int]) -> None:
        self.stats = DeliveryStats()
        self._every_s = every_s
        self._in_flight = in_flight
        self._since = time.monotonic()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await wait_first(stop.wait(), within_s=self._every_s if self._every_s > 0 else None)
            if self._every_s > 0:
                self.emit()

    def emit(self) -> None:
        stats, self.stats = self.stats, DeliveryStats()
        now = time.monotonic()
        seconds, self._since = now - self._since, now
        if not stats.requests:
            return
        log.info(
            "delivery.summary",
            seconds=round(seconds, 1),
            requests=stats.requests,
            delivered_events=stats.delivered_events,
            events_per_s=round(stats.delivered_events / seconds, 1) if seconds else None,
            failed_requests=stats.failed_requests,
            gave_up_events=stats.gave_up_events,
            webhooks=len(stats.webhooks),
            in_flight=self._in_flight(),
        )
