"""Keep the churning tables small: delivered queue rows are deleted at once, arrivals are moved
on every pass and due rows rewritten, and their dead versions would slow every claim and pass
(index scans walk them) until vacuumed. Autovacuum may be off or behind, so the daemon checks
and vacuums each of them itself when it is mostly dead rows."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import structlog

from engine.aio import wait_first
from engine.config import MaintenanceConfig
from engine.db.store import DB_ERRORS, Store

log = structlog.get_logger("engine.vacuum")


class QueueVacuum:
    def __init__(self, store: Store, config: MaintenanceConfig) -> None:
        self._store = store
        self._config = config
        self._refused = False

    async def run(self, stop: asyncio.Event) -> None:
        """Check every queue_vacuum_check_s until `stop` is set (or forever idle when off)."""
        every = self._config.queue_vacuum_check_s
        while not stop.is_set():
            if every > 0 and not self._refused:
                await self._check()
            await wait_first(stop.wait(), within_s=every if every > 0 else None)

    async def _check(self) -> None:
        try:
            for table in await self._store.churn_tuples():
                # Enough dead rows, and enough of the table (a big held backlog must not stop it).
                if table.dead < self._config.queue_vacuum_min_dead or table.dead * 20 < table.live:
                    continue
                started = time.perf_counter()
                await self._store.vacuum(table.name)
                log.info(
                    "queue.vacuumed",
                    table=table.name,
                    dead_rows=table.dead,
                    live_rows=table.live,
                    duration_ms=round((time.perf_counter() - started) * 1000),
                )
        except asyncpg.InsufficientPrivilegeError as exc:
            # Not the tables' owner: leave it to autovacuum, and say so once.
            self._refused = True
            log.warning("queue.vacuum_not_permitted", error=str(exc))
        except DB_ERRORS as exc:
            log.warning("queue.vacuum_failed", error=f"{type(exc).__name__}: {exc}")
