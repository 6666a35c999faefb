"""One LISTEN connection outside the pool: NOTIFY is only a wake-up, polling is the safety net."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import structlog

from engine.aio import wait_first
from engine.db.store import DB_ERRORS, NOTIFY_CHANNEL
from engine.delivery.backoff import Reconnect

log = structlog.get_logger("engine.listener")


class Listener:
    def __init__(self, dsn: str | None, on_notify: Callable[[], None]) -> None:
        self._dsn = dsn
        self._on_notify = on_notify
        self._reconnect = Reconnect()
        self.connected = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            lost = asyncio.Event()
            conn: asyncpg.Connection | None = None

            def on_lost(_conn: object, lost: asyncio.Event = lost) -> None:
                lost.set()

            try:
                conn = await asyncpg.connect(
                    self._dsn, server_settings={"application_name": "webhook-engine-listener"}
                )
                conn.add_termination_listener(on_lost)
                await conn.add_listener(NOTIFY_CHANNEL, self._notified)
                log.info("listener.connected")
                self.connected.set()
                self._reconnect.reset()
                # Anything committed while we were not listening is found by the next pass.
                self._on_notify()
                await wait_first(stop.wait(), lost.wait())
                if lost.is_set() and not stop.is_set():
                    log.warning("listener.connection_lost")
            except DB_ERRORS as exc:
                delay = self._reconnect.next_delay_s()
                log.warning(
                    "listener.connect_failed",
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in_s=round(delay, 3),
                )
                await wait_first(stop.wait(), within_s=delay)
            finally:
                self.connected.clear()
                if conn is not None and not conn.is_closed():
                    conn.terminate()

    def _notified(self, *_args: object) -> None:
        self._on_notify()
