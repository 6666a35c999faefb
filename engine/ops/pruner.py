"""Background clean-up: old log rows and fully delivered old events, in small batches, so that
delivered work does not pile up and no delete holds long locks."""

from __future__ import annotations

import asyncio

import structlog

from engine.aio import wait_first
from engine.config import RetentionConfig
from engine.db.store import DB_ERRORS, Store

log = structlog.get_logger("engine.pruner")

_DAY_S = 86400.0


class Pruner:
    def __init__(self, store: Store, config: RetentionConfig) -> None:
        self._store = store
        self._config = config
        self._targets = [
            (query, days * _DAY_S)
            for query, days in (
                ("prune_logs", config.logs_days),
                ("prune_events", config.events_days),
            )
            if days > 0
        ]

    async def run(self, stop: asyncio.Event) -> None:
        """Prune every prune_interval_s until `stop` is set."""
        while not stop.is_set():
            try:
                for query, older_than_s in self._targets:
                    await self._prune(query, older_than_s, stop)
            except DB_ERRORS as exc:
                log.warning("pruner.failed", error=f"{type(exc).__name__}: {exc}")
            await wait_first(stop.wait(), within_s=self._config.prune_interval_s)

    async def _prune(self, query: str, older_than_s: float, stop: asyncio.Event) -> None:
        total = 0
        while not stop.is_set():
            deleted = await self._store.prune(query, older_than_s, self._config.prune_batch)
            total += deleted
            if deleted < self._config.prune_batch:
                break
            await asyncio.sleep(0)  # let deliveries run between batches
        if total:
            log.info("pruner.pruned", table=query.removeprefix("prune_"), rows=total)
