"""Read-only queries for operators: metrics gauges, the webhook_status view and tail.

The SQL is in sql/ops.sql; like store.py, this module is part of the database layer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from uuid import UUID

import asyncpg

from engine.db.store import load_queries

OPS_QUERIES = load_queries(resources.files("engine.db").joinpath("sql/ops.sql").read_text("utf-8"))


@dataclass(frozen=True, kw_only=True, slots=True)
class QueueDepth:
    # Exact up to the cap of the count, then the statistics estimate (see `approximate`).
    pending: int
    failed: int
    approximate: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class TailFilter:
    webhook_id: int | None = None
    tenant: str | None = None
    failures_only: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class TailPage:
    polled_at: datetime
    rows: list[asyncpg.Record]


class OpsReader:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def ping(self, timeout_s: float) -> None:
        await self._pool.fetchval(OPS_QUERIES["database_now"], timeout=timeout_s)

    async def queue_depth(self, cap: int) -> QueueDepth:
        """Pending and failed deliveries: exact up to `cap` each, estimated beyond (the count
        scans at most `cap` rows; the estimate is the statistics collector's live rows)."""
        row = await self._pool.fetchrow(OPS_QUERIES["queue_depth"], cap)
        assert row is not None
        pending, failed, live = int(row["pending"]), int(row["failed"]), int(row["live_estimate"])
        approximate = pending >= cap or failed >= cap
        if pending >= cap:
            pending = max(pending, live - failed)
        return QueueDepth(pending=pending, failed=failed, approximate=approximate)

    async def oldest_due_age_s(self) -> float | None:
        value = await self._pool.fetchval(OPS_QUERIES["oldest_due_age"])
        return None if value is None else max(float(value), 0.0)

    async def endpoint_states(self, per_tenant: bool) -> list[tuple[str, str, int]]:
        """(state, tenant, endpoints); tenant is '' unless `per_tenant`."""
        rows = await self._pool.fetch(OPS_QUERIES["endpoint_states"], per_tenant)
        return [(row["state"], row["tenant"], int(row["endpoints"])) for row in rows]

    async def status(
        self, webhook_ids: Sequence[int] | None, tenant: str | None
    ) -> list[asyncpg.Record]:
        ids = list(webhook_ids) if webhook_ids else None
        return list(await self._pool.fetch(OPS_QUERIES["status"], ids, tenant))

    async def existing_webhooks(self, webhook_ids: Sequence[int]) -> set[int]:
        rows = await self._pool.fetch(OPS_QUERIES["existing_webhooks"], list(webhook_ids))
        return {int(row["id"]) for row in rows}

    async def database_now(self) -> datetime:
        value: datetime = await self._pool.fetchval(OPS_QUERIES["database_now"])
        return value

    async def tail(
        self,
        *,
        after: tuple[datetime, UUID],
        window_start: datetime,
        completed_since: datetime,
        where: TailFilter,
        limit: int,
    ) -> TailPage:
        records = await self._pool.fetch(
            OPS_QUERIES["tail"],
            after[0],
            after[1],
            window_start,
            completed_since,
            where.webhook_id,
            where.tenant,
            where.failures_only,
            limit,
        )
        rows = [r for r in records if r["request_id"] is not None]
        return TailPage(polled_at=records[0]["polled_at"], rows=rows)
