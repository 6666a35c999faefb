"""A periodic summary line for operators tailing the logs: what was delivered since the last one.

Successful deliveries are logged at debug level only (one line per request would drown the log at
thousands per second); this line says how the daemon is doing at info level. It is written even
when nothing happened, with the queue's pending count and this daemon's in-flight batches, so an
idle daemon (nothing pending) can be told from a hung one (pending, nothing delivered)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import structlog

from engine.aio import wait_first
from engine.db.ops import QueueDepth
from engine.db.store import DB_ERRORS
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


def significant(value: float, digits: int = 3) -> float:
    """Pure: `value` rounded to `digits` significant digits (a slow rate stays above zero)."""
    return float(f"{value:.{digits}g}")


class StatsLogger:
    """Logs `delivery.summary` every `every_s` seconds."""

    def __init__(
        self,
        every_s: float,
        in_flight: Callable[[], int],
        queue: Callable[[], Awaitable[QueueDepth]] | None = None,
    ) -> None:
        self.stats = DeliveryStats()
        self._every_s = every_s
        self._in_flight = in_flight
        self._queue = queue
        self._since = time.monotonic()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await wait_first(stop.wait(), within_s=self._every_s if self._every_s > 0 else None)
            if self._every_s > 0 and not stop.is_set():
                await self.emit()

    async def emit(self) -> None:
        stats, self.stats = self.stats, DeliveryStats()
        now = time.monotonic()
        seconds, self._since = now - self._since, now
        queue: dict[str, object] = {}
        if self._queue is not None:
            try:
                depth = await self._queue()
                queue = {"pending_events": depth.pending, "failed_events": depth.failed}
                if depth.approximate:
                    queue["queue_counts_approximate"] = True
            except DB_ERRORS as exc:
                queue = {"pending_events": None, "queue_error": type(exc).__name__}
        log.info(
            "delivery.summary",
            seconds=significant(seconds),
            requests=stats.requests,
            delivered_events=stats.delivered_events,
            events_per_s=significant(stats.delivered_events / seconds) if seconds else None,
            failed_requests=stats.failed_requests,
            gave_up_events=stats.gave_up_events,
            webhooks=len(stats.webhooks),
            in_flight=self._in_flight(),
            **queue,
        )
