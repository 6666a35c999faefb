"""Buffered, batched writes of outcomes, endpoint state and log rows.

A commit costs about a millisecond, so outcomes are never written one by one: they wait in a
buffer that is flushed every few milliseconds, or sooner when it fills, in one transaction.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import structlog

from engine.aio import wait_event
from engine.db.store import DB_ERRORS, EndpointState, Store
from engine.delivery.backoff import Reconnect
from engine.delivery.policy import RetryPolicy
from engine.models import Outcome

log = structlog.get_logger("engine.recorder")

FlushListener = Callable[[Sequence[Outcome], Sequence[EndpointState]], None]


class Recorder:
    def __init__(
        self,
        store: Store,
        *,
        policy: RetryPolicy,
        flush_interval_s: float,
        flush_max_items: int,
        on_flush: FlushListener,
        retry_max_s: float = 5.0,
        on_flush_duration: Callable[[float], None] | None = None,
    ) -> None:
        self._store = store
        self._policy = policy
        self._interval_s = flush_interval_s
        self._max_items = flush_max_items
        self._on_flush = on_flush
        self._on_flush_duration = on_flush_duration
        self._retry_max_s = retry_max_s
        self._buffer: list[Outcome] = []
        self._has_items = asyncio.Event()
        self._full = asyncio.Event()
        self._closing = False

    def add(self, outcome: Outcome) -> None:
        self._buffer.append(outcome)
        self._has_items.set()
        if len(self._buffer) >= self._max_items:
            self._full.set()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    async def run(self) -> None:
        """Flush until close() is called and the buffer is empty."""
        while True:
            if not self._buffer:
                if self._closing:
                    return
                await self._has_items.wait()
            # Give the buffer a few milliseconds to fill, so one commit carries many outcomes.
            if not self._closing:
                await wait_event(self._full, self._interval_s)
            self._has_items.clear()
            self._full.clear()
            if self._buffer:
                await self._flush_with_retry()

    def close(self) -> None:
        """Flush what is buffered, then let run() return."""
        self._closing = True
        self._has_items.set()
        self._full.set()

    async def _flush_with_retry(self) -> None:
        reconnect = Reconnect(initial_s=0.05, max_s=self._retry_max_s)
        while True:
            batch, self._buffer = self._buffer, []
            started = time.perf_counter()
            try:
                states = await self._store.record(batch, self._policy)
            except DB_ERRORS as exc:
                # Keep every outcome: put them back in front and try again. If the process dies
                # meanwhile, the leases expire and the events are delivered again.
                self._buffer = batch + self._buffer
                delay = reconnect.next_delay_s()
                log.warning(
                    "recorder.flush_failed",
                    error=f"{type(exc).__name__}: {exc}",
                    pending=len(self._buffer),
                    retry_in_s=round(delay, 3),
                )
                await asyncio.sleep(delay)
                continue
            if self._on_flush_duration is not None:
                self._on_flush_duration(time.perf_counter() - started)
            self._on_flush(batch, states)
            return
