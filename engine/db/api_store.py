"""Postgres for the management API: API keys and every tenant-scoped read and write the REST
routes make. SQL lives in sql/api.sql. Every call takes a `Scope`, which goes into every query,
so no caller can forget the tenant."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from engine.db.store import DB_ERRORS, Conn, _reset_connection, load_queries

QUERIES = load_queries(resources.files("engine.db").joinpath("sql/api.sql").read_text("utf-8"))
KEY_PREFIX = "whk_"
# How often a test delivery's log row is looked for while a client waits for it.
_LOG_POLL_S = 0.05


@dataclass(frozen=True, kw_only=True, slots=True)
class Scope:
    """Whose rows a caller may see: one tenant's, or every tenant's (tenant None: admin)."""

    tenant: str | None

    @property
    def is_admin(self) -> bool:
        return self.tenant is None

    def tenant_for_new(self, requested: str | None) -> str:
        """The tenant a row created by this caller belongs to: an admin's choice (default
        ''), else the key's own; ForeignTenant when a tenant key names another."""
        if self.tenant is None:
            return requested or ""
        if requested is not None and requested != self.tenant:
            raise ForeignTenant(requested)
        return self.tenant


ADMIN = Scope(tenant=None)


@dataclass(frozen=True, kw_only=True, slots=True)
class ApiKey:
    id: int
    prefix: str
    tenant: str | None
    read_only: bool
    name: str = ""
    created_at: datetime | None = None
    revoked_at: datetime | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class NewEvent:
    tenant: str
    topic: str
    payload: str  # JSON text
    webhook_id: int | None
    idempotency_key: str | None


class ForeignTenant(Exception):
    """A tenant key tried to create something in another tenant."""


class TargetNotFound(LookupError):
    """An event names a webhook_id that is not a webhook of its tenant."""

    def __init__(self, index: int) -> None:
        super().__init__(f"event {index}: webhook_id names no webhook")
        self.index = index


class IdempotencyConflict(Exception):
    """An idempotency key was used before for a different event."""

    def __init__(self, key: str) -> None:
        super().__init__("idempotency_key was used before for a different event")
        self.key = key


class NoSecret(Exception):
    """The webhook's auth type has no secret to rotate."""


def new_key() -> tuple[str, str]:
    """(prefix, key): the whole key is shown once; the prefix identifies it in lists."""
    prefix = secrets.token_hex(6)
    return prefix, f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"


def key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def key_prefix(key: str) -> str | None:
    if not key.startswith(KEY_PREFIX) or not key.isascii():
        return None
    prefix, sep, _ = key[len(KEY_PREFIX) :].partition("_")
    return prefix if sep and prefix else None


class ApiStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, dsn: str | None, *, pool_size: int) -> ApiStore:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=pool_size,
            # The API's queries leave no session state, so skip asyncpg's reset round trip on
            # every release (measured: it doubled the round trips of a read).
            reset=_reset_connection,
            server_settings={"application_name": "webhook-engine-api", "jit": "off"},
        )
        return cls(pool)

    async def close(self) -> None:
        await self._pool.close()

    async def _doc(self, query: str, *args: Any) -> str | None:
        """The one JSON text a query answers, None when it finds no row."""
        return _text(await self._pool.fetchval(QUERIES[query], *args))

    async def ping(self, timeout_s: float) -> bool:
        try:
            return bool(await self._pool.fetchval(QUERIES["ping"], timeout=timeout_s))
        except DB_ERRORS:
            return False

    # --- API keys -------------------------------------------------------------------------

    async def create_key(
        self, *, tenant: str | None, read_only: bool, name: str
    ) -> tuple[int, str]:
        """A new key: (id, key). Only its hash is stored; the key cannot be shown again."""
        prefix, key = new_key()
        key_id = await self._pool.fetchval(
            QUERIES["key_create"], prefix, key_hash(key), tenant, read_only, name
        )
        return int(key_id), key

    async def list_keys(self) -> list[ApiKey]:
        return [ApiKey(**dict(row)) for row in await self._pool.fetch(QUERIES["key_list"])]

    async def revoke_key(self, key_id: int) -> bool:
        return await self._pool.fetchval(QUERIES["key_revoke"], key_id) is not None

    async def authenticate(self, key: str) -> ApiKey | None:
        prefix = key_prefix(key)
        if prefix is None:
            return None
        row = await self._pool.fetchrow(QUERIES["key_lookup"], prefix)
        if row is None or not hmac.compare_digest(bytes(row["key_hash"]), key_hash(key)):
            return None
        return ApiKey(id=row["id"], prefix=prefix, tenant=row["tenant"], read_only=row["read_only"])

    # --- webhooks -------------------------------------------------------------------------

    async def list_webhooks(
        self,
        scope: Scope,
        *,
        tenant: str | None,
        status: str | None,
        topic: str | None,
        q: str | None,
        after_id: int,
        limit: int,
    ) -> list[tuple[int, str]]:
        """Up to `limit` webhooks with ids above `after_id`, in id order: (id, JSON)."""
        rows = await self._pool.fetch(
            QUERIES["list_webhooks"], scope.tenant, tenant, status, topic, q, after_id, limit
        )
        return [(row["id"], row["doc"]) for row in rows]

    async def count_webhooks(self, scope: Scope, *, status: str | None) -> int:
        return int(await self._pool.fetchval(QUERIES["count_webhooks"], scope.tenant, status))

    async def create_webhook(self, scope: Scope, tenant: str, columns: dict[str, Any]) -> str:
        doc = await self._pool.fetchval(
            QUERIES["create_webhook"], scope.tenant, tenant, _json(columns)
        )
        if doc is None:
            raise ForeignTenant(tenant)
        return str(doc)

    async def get_webhook(self, scope: Scope, webhook_id: int) -> str | None:
        return await self._doc("get_webhook", scope.tenant, webhook_id)

    async def update_webhook(
        self, scope: Scope, webhook_id: int, columns: dict[str, Any]
    ) -> str | None:
        return await self._doc("update_webhook", scope.tenant, webhook_id, _json(columns))

    async def delete_webhook(self, scope: Scope, webhook_id: int) -> bool:
        return (
            await self._pool.fetchval(QUERIES["delete_webhook"], scope.tenant, webhook_id)
            is not None
        )

    async def rotate_secret(self, scope: Scope, webhook_id: int, secret: str | None) -> str | None:
        """Replace the signing secret (generated when None); the old one keeps signing for the
        grace period (schema trigger). Returns the webhook with its new secret."""
        async with self._pool.acquire() as conn, conn.transaction():
            auth_type = await conn.fetchval(QUERIES["lock_webhook_auth"], scope.tenant, webhook_id)
            if auth_type is None:
                return None
            if auth_type not in ("hmac", "token"):
                raise NoSecret(auth_type)
            return _text(
                await conn.fetchval(QUERIES["rotate_secret"], scope.tenant, webhook_id, secret)
            )

    async def reveal_secret(self, scope: Scope, webhook_id: int) -> str | None:
        return await self._doc("reveal_secret", scope.tenant, webhook_id)

    # --- events ---------------------------------------------------------------------------

    async def add_events(self, events: Sequence[NewEvent]) -> list[str]:
        """Insert the events in one statement (one fan-out); an idempotency key seen before in
        the tenant answers the earlier event. Returns the events, in order, as JSON."""
        if all(e.webhook_id is None and e.idempotency_key is None for e in events):
            # The common case is one statement, one round trip (its own transaction).
            rows = await self._pool.fetch(QUERIES["insert_events"], *_event_columns(events))
            return [row[0] for row in rows]
        async with self._pool.acquire() as conn, conn.transaction():
            missing = await conn.fetchval(
                QUERIES["unknown_targets"],
                [e.tenant for e in events],
                [e.webhook_id for e in events],
            )
            if missing is not None:
                raise TargetNotFound(int(missing) - 1)
            rows = await conn.fetch(QUERIES["insert_events"], *_event_columns(events))
            # Rows come back in input order; an event whose key was inserted by an earlier
            # event (before, or earlier in this batch) answers that one.
            inserted_keys = {row[1] for row in rows if row[1] is not None}
            is_new: list[bool] = []
            repeated: list[NewEvent] = []
            for event in events:
                key = event.idempotency_key
                is_new.append(key is None or key in inserted_keys)
                if key is None:
                    continue
                if key in inserted_keys:
                    inserted_keys.discard(key)
                else:
                    repeated.append(event)
            earlier = await _earlier_events(conn, repeated) if repeated else {}
        inserted = iter(rows)
        return [
            next(inserted)[0] if new else earlier[str(event.idempotency_key)]
            for event, new in zip(events, is_new, strict=True)
        ]

    async def get_event(self, scope: Scope, event_id: int) -> str | None:
        return await self._doc("get_event", scope.tenant, event_id)

    # --- deliveries -----------------------------------------------------------------------

    async def send_test(
        self, scope: Scope, webhook_id: int, *, topic: str, payload: str, wait_s: float
    ) -> tuple[int, str | None] | None:
        """Queue a test event for the webhook; wait up to `wait_s` for its log row. Returns
        (event id, log row JSON or None), or None when the webhook is not in scope."""
        event_id = await self._pool.fetchval(
            QUERIES["send_test"], scope.tenant, webhook_id, topic, payload
        )
        if event_id is None:
            return None
        deadline = time.monotonic() + wait_s
        while True:
            log = await self._pool.fetchval(QUERIES["log_of_event"], webhook_id, event_id)
            if log is not None or time.monotonic() >= deadline:
                return int(event_id), log
            await asyncio.sleep(min(_LOG_POLL_S, max(deadline - time.monotonic(), 0)))

    async def list_logs(
        self,
        scope: Scope,
        webhook_id: int,
        *,
        since: datetime | None,
        until: datetime | None,
        success: bool | None,
        before: tuple[datetime, UUID] | None,
        limit: int,
    ) -> str | None:
        """A page of log summaries, newest first, as a JSON array; None: webhook not in scope."""
        return await self._doc(
            "list_logs",
            scope.tenant,
            webhook_id,
            since,
            until,
            success,
            before[0] if before else None,
            before[1] if before else None,
            limit,
        )

    async def get_log(self, scope: Scope, webhook_id: int, request_id: UUID) -> str | None:
        return await self._doc("get_log", scope.tenant, webhook_id, request_id)

    async def webhook_stats(
        self, scope: Scope, webhook_id: int, since: datetime | None
    ) -> str | None:
        return await self._doc("webhook_stats", scope.tenant, webhook_id, since)

    async def replay(
        self,
        scope: Scope,
        webhook_id: int,
        *,
        failed: bool,
        since: datetime | None,
        until: datetime | None,
        event_ids: Sequence[int] | None,
        dry_run: bool,
    ) -> int | None:
        """Queue deliveries again: the given-up ones (`failed`), or matching events from the
        history. Returns how many (would be) queued; None when the webhook is not in scope."""
        async with self._pool.acquire() as conn, conn.transaction():
            if failed:
                row = await conn.fetchrow(
                    QUERIES["replay_failed"], scope.tenant, webhook_id, dry_run
                )
            else:
                row = await conn.fetchrow(
                    QUERIES["replay_events"],
                    scope.tenant,
                    webhook_id,
                    since,
                    until,
                    list(event_ids) if event_ids is not None else None,
                    dry_run,
                )
            if row is None or row["found"] is None:
                return None
            if row["count"] and not dry_run:
                await conn.execute(QUERIES["wake"])
            return int(row["count"])


def _event_columns(events: Sequence[NewEvent]) -> list[list[Any]]:
    return [
        [e.tenant for e in events],
        [e.topic for e in events],
        [e.payload for e in events],
        [e.webhook_id for e in events],
        [e.idempotency_key for e in events],
    ]


async def _earlier_events(conn: Conn, events: Sequence[NewEvent]) -> dict[str, str]:
    """The stored events for these keys; IdempotencyConflict when one differs from the
    event sent again."""
    rows = await conn.fetch(
        QUERIES["find_idempotent"],
        [e.tenant for e in events],
        [e.idempotency_key for e in events],
        [e.topic for e in events],
        [e.payload for e in events],
        [e.webhook_id for e in events],
    )
    for row in rows:
        if not row["same"]:
            raise IdempotencyConflict(row["key"])
    return {row["key"]: row["doc"] for row in rows}


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _json(value: dict[str, Any]) -> str:
    return orjson.dumps(value).decode()
