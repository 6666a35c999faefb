"""The only module that talks to Postgres. SQL lives in sql/queries.sql (named blocks) and in
the top-level schema.sql."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from engine.delivery.batching import envelope_overhead_estimate
from engine.delivery.policy import EndpointFailure, RetryPolicy
from engine.models import Event, LogRow, Outcome, Webhook

NOTIFY_CHANNEL = "webhook_engine"
# What a lost or restarted server can raise; callers log these and try again. InternalClientError
# comes from asyncpg when a connection was cut in the middle of an operation.
DB_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)
# What webhook_engine_schema_version() in schema.sql returns; raise both together.
SCHEMA_VERSION = 5
Conn = asyncpg.Connection | PoolConnectionProxy
# Serialises concurrent `init-db` runs.
_SCHEMA_LOCK_KEY = 0x77656268  # "webh"


def load_queries(text: str) -> dict[str, str]:
    """Split `-- name: x` blocks into a dict of name to SQL."""
    queries: dict[str, str] = {}
    for block in re.split(r"^-- name: ", text, flags=re.MULTILINE)[1:]:
        name, _, sql = block.partition("\n")
        queries[name.strip()] = sql.strip().rstrip(";")
    return queries


QUERIES = load_queries(resources.files("engine.db").joinpath("sql/queries.sql").read_text("utf-8"))


def schema_sql() -> str:
    """schema.sql: packaged in wheels, read from the source tree in editable installs."""
    packaged = resources.files("engine.db").joinpath("sql/schema.sql")
    if packaged.is_file():
        return packaged.read_text("utf-8")
    return (Path(__file__).resolve().parents[2] / "schema.sql").read_text("utf-8")


@dataclass(frozen=True, kw_only=True, slots=True)
class ClaimBudget:
    webhook: Webhook
    max_rows: int
    max_bytes: int


# Tables whose rows are deleted or rewritten all the time: the daemon vacuums them itself.
CHURNING = ("webhook_queue", "webhook_due", "webhook_arrivals")


@dataclass(frozen=True, kw_only=True, slots=True)
class TableTuples:
    name: str
    dead: int
    live: int


@dataclass(frozen=True, kw_only=True, slots=True)
class DueWebhook:
    """An endpoint of the due set, as one pass saw it: `version` identifies what had arrived
    for it then; `deliverable` is false when it was paused or is backing off since."""

    webhook: Webhook
    version: int
    deliverable: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class Settlement:
    """What a pass learnt of a due endpoint (see settle_due in queries.sql): 'next' (rows left),
    'dry' (no claimable rows left) or 'hold' (not deliverable now)."""

    webhook_id: int
    version: int
    mode: str


@dataclass(frozen=True, kw_only=True, slots=True)
class EndpointState:
    """An endpoint's failure count after a flush; for a failing one, when it is tried again and
    why it was disabled (if it was)."""

    webhook_id: int
    consecutive_failures: int
    retry_in_s: float | None = None
    disabled_reason: str | None = None


async def init_schema(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK_KEY)
        await conn.execute(schema_sql())


async def create_roles(conn: asyncpg.Connection) -> None:
    """The schema, then the webhook_engine_app and webhook_engine_daemon roles and their grants."""
    roles = resources.files("engine.db").joinpath("sql/roles.sql").read_text("utf-8")
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK_KEY)
        await conn.execute(schema_sql())
        await conn.execute(roles)


class Store:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(
        cls,
        dsn: str | None,
        *,
        pool_size: int,
        synchronous_commit: str,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> Store:
        """`on_error` hears of every failed statement and failed connection attempt of the pool
        (for the database error metric); it must be quick and must not raise."""
        pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=pool_size,
            reset=_reset_connection,
            **_error_hooks(on_error),
            server_settings={
                "application_name": "webhook-engine",
                "synchronous_commit": synchronous_commit,
                # Our queries touch a handful of rows; with a big backlog their cost estimates
                # cross jit_above_cost and compiling took 17 ms of a 0.3 ms claim (measured).
                "jit": "off",
            },
        )
        return cls(pool)

    async def close(self) -> None:
        await self._pool.close()

    @property
    def pool(self) -> asyncpg.Pool:
        """For the read-only operator queries (engine/db/ops.py)."""
        return self._pool

    async def schema_version(self) -> int | None:
        """The version init-db installed in this database, None when there is no schema."""
        if not await self._pool.fetchval("SELECT to_regclass('webhook_queue') IS NOT NULL"):
            return None
        if not await self._pool.fetchval(
            "SELECT to_regproc('webhook_engine_schema_version') IS NOT NULL"
        ):
            return 1  # the first release had no version function
        return int(await self._pool.fetchval("SELECT webhook_engine_schema_version()"))

    async def due_webhooks(self, limit: int) -> list[DueWebhook]:
        """Take in new arrivals and return endpoints due now: up to `limit` that just arrived
        and up to `limit` that were already waiting."""
        rows = await self._pool.fetch(QUERIES["due_webhooks"], limit)
        return [
            DueWebhook(
                webhook=_webhook(row), version=row["due_version"], deliverable=row["deliverable"]
            )
            for row in rows
        ]

    async def settle_due(self, settlements: Sequence[Settlement]) -> None:
        if settlements:
            await self._pool.execute(
                QUERIES["settle_due"],
                [s.webhook_id for s in settlements],
                [s.version for s in settlements],
                [s.mode for s in settlements],
            )

    async def next_wakeup_s(self, *, pending_only: bool = False) -> float | None:
        """Seconds until the next entry of the due set is due (0 when one is due now), None when
        there is none; with `pending_only`, only entries whose endpoint has pending rows."""
        query = QUERIES["next_pending_wakeup" if pending_only else "next_wakeup"]
        value = await self._pool.fetchval(query)
        return None if value is None else max(float(value), 0.0)

    async def claim(self, budgets: Sequence[ClaimBudget], lease_s: float) -> dict[int, list[Event]]:
        """Lease queued events for the given endpoints; returns them per webhook in id order."""
        if not budgets:
            return {}
        rows = await self._pool.fetch(
            QUERIES["claim"],
            [b.webhook.id for b in budgets],
            [b.max_rows for b in budgets],
            [b.max_bytes for b in budgets],
            envelope_overhead_estimate(),
            lease_s,
        )
        claimed: dict[int, list[Event]] = {}
        for row in rows:
            claimed.setdefault(row["webhook_id"], []).append(
                Event(
                    id=row["event_id"],
                    topic=row["topic"],
                    created_at=row["created_at"],
                    payload=row["payload"].encode(),
                    attempt=row["attempts"],
                )
            )
        for events in claimed.values():
            events.sort(key=lambda e: e.id)
        return claimed

    async def record(self, outcomes: Sequence[Outcome], policy: RetryPolicy) -> list[EndpointState]:
        """Write outcomes, log rows and endpoint state in one transaction; `policy` decides each
        failing endpoint's next try and whether it is disabled. Returns the endpoints whose
        failure state changed."""
        done_w, done_e = _pairs(o for o in outcomes if o.success)
        unsent_w, unsent_e = _pairs(o for o in outcomes if not o.sent)
        failed = [o for o in outcomes if o.sent and not o.success and not o.final]
        failed_w, failed_e = _pairs(failed)
        final = [o for o in outcomes if o.sent and not o.success and o.final]
        final_w, final_e = _pairs(final)
        logs = _columns([o.log for o in outcomes if o.log is not None])
        if all(o.success and not o.webhook.consecutive_failures for o in outcomes):
            # Everything delivered to healthy endpoints: no endpoint state to touch, so one
            # statement (its own transaction) is the whole flush.
            await self._pool.execute(QUERIES["complete_and_log"], *logs, done_w, done_e)
            return []
        endpoint_ids, resets, failures = _endpoint_tallies(outcomes)

        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(QUERIES["complete_and_log"], *logs, done_w, done_e)
            if failed_w:
                await conn.execute(QUERIES["release_failed"], failed_w, failed_e, _errors(failed))
            if final_w:
                await conn.execute(QUERIES["mark_failed"], final_w, final_e, _errors(final))
            if unsent_w:
                await conn.execute(QUERIES["release_unsent"], unsent_w, unsent_e)
            if not endpoint_ids:
                return []
            rows = await conn.fetch(QUERIES["endpoint_outcomes"], endpoint_ids, resets, failures)
            return await self._decide(conn, rows, outcomes, policy)

    async def _decide(
        self,
        conn: Conn,
        rows: Sequence[asyncpg.Record],
        outcomes: Sequence[Outcome],
        policy: RetryPolicy,
    ) -> list[EndpointState]:
        webhooks = {o.webhook_id: o.webhook for o in outcomes}
        failing = [row for row in rows if row["failures"] > 0]
        windows = {w: policy.window_s(webhooks[w]) for w in (row["id"] for row in failing)}
        recent = await self._recent_failures(conn, windows)
        states = [
            EndpointState(webhook_id=row["id"], consecutive_failures=row["consecutive_failures"])
            for row in rows
            if row["failures"] == 0
        ]
        decided: list[tuple[int, float, str | None]] = []
        for row in failing:
            webhook_id = row["id"]
            mine = [o for o in outcomes if o.webhook_id == webhook_id and not o.success]
            retry_after = [o.retry_after_s for o in mine if o.retry_after_s is not None]
            decision = policy.decide(
                EndpointFailure(
                    webhook=webhooks[webhook_id],
                    consecutive_failures=row["consecutive_failures"],
                    recent_failures=recent.get(webhook_id, 0),
                    retry_after_s=max(retry_after) if retry_after else None,
                    gone=any(o.gone for o in mine),
                )
            )
            decided.append((webhook_id, decision.delay_s, decision.disable_reason))
            states.append(
                EndpointState(
                    webhook_id=webhook_id,
                    consecutive_failures=row["consecutive_failures"],
                    retry_in_s=decision.delay_s,
                    disabled_reason=decision.disable_reason,
                )
            )
        if decided:
            await conn.execute(
                QUERIES["set_endpoint_state"],
                [d[0] for d in decided],
                [d[1] for d in decided],
                [d[2] for d in decided],
            )
        return states

    @staticmethod
    async def _recent_failures(conn: Conn, windows: dict[int, float | None]) -> dict[int, int]:
        active = {w: s for w, s in windows.items() if s is not None}
        if not active:
            return {}
        rows = await conn.fetch(QUERIES["recent_failures"], list(active), list(active.values()))
        return {row["webhook_id"]: row["failures"] for row in rows}

    async def list_failed(self, webhook_id: int | None, limit: int) -> list[asyncpg.Record]:
        return list(await self._pool.fetch(QUERIES["list_failed"], webhook_id, limit))

    async def replay_failed(
        self, webhook_id: int | None, event_ids: Sequence[int] | None = None
    ) -> int:
        """Put failed deliveries back in the queue with fresh attempts; returns how many."""
        row = await self._pool.fetchrow(
            QUERIES["replay_failed"], webhook_id, list(event_ids) if event_ids else None
        )
        return int(row[0]) if row else 0

    async def prune(self, query: str, older_than_s: float, batch: int) -> int:
        """Delete one batch of old rows (`prune_logs` or `prune_events`); returns how many."""
        status = await self._pool.execute(QUERIES[query], older_than_s, batch)
        return int(status.split()[-1])

    async def churn_tuples(self) -> list[TableTuples]:
        """Dead and live rows of the tables that churn (see CHURNING), as the statistics
        collector counts them."""
        rows = await self._pool.fetch(QUERIES["churn_tuples"])
        return [TableTuples(name=r["name"], dead=int(r["dead"]), live=int(r["live"])) for r in rows]

    async def vacuum(self, table: str) -> None:
        """VACUUM one of CHURNING; refused clearly when this role may not."""
        if table not in CHURNING:
            raise ValueError(f"{table} is not one of {', '.join(CHURNING)}")
        if not await self._pool.fetchval(QUERIES["may_vacuum"], table):
            raise asyncpg.InsufficientPrivilegeError(
                f"only the owner of {table} (or, on Postgres 17+, a holder of MAINTAIN) "
                "may vacuum it"
            )
        await self._pool.execute(QUERIES[f"vacuum_{table}"])

    async def release_unsent(self, pairs: Sequence[tuple[int, int]]) -> None:
        if pairs:
            await self._pool.execute(
                QUERIES["release_unsent"], [w for w, _ in pairs], [e for _, e in pairs]
            )


def _error_hooks(on_error: Callable[[BaseException], None] | None) -> dict[str, Any]:
    """create_pool arguments that report failed statements (asyncpg's query logger, called for
    every statement: it only looks at `exception`) and failed connection attempts."""
    if on_error is None:
        return {}

    def logged(record: Any) -> None:
        error = record.exception
        if error is not None and not isinstance(error, asyncio.CancelledError):
            on_error(error)

    async def init(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(logged)

    async def connect(*args: Any, **kwargs: Any) -> asyncpg.Connection:
        try:
            return await asyncpg.connect(*args, **kwargs)
        except DB_ERRORS as exc:
            on_error(exc)
            raise

    return {"init": init, "connect": connect}


async def _reset_connection(conn: asyncpg.Connection) -> None:
    """Our queries leave no session state behind, so skip asyncpg's default reset (a round trip
    of UNLISTEN/RESET ALL on every release); only an interrupted transaction needs undoing."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


def _webhook(row: asyncpg.Record) -> Webhook:
    return Webhook(
        id=row["id"],
        url=row["url"],
        method=row["method"],
        auth_type=row["auth_type"],
        secret=row["secret"],
        basic_username=row["basic_username"],
        basic_password=row["basic_password"],
        headers=orjson.loads(row["headers"]),
        maximum_events=row["maximum_events"],
        maximum_size=row["maximum_size"],
        consecutive_failures=row["consecutive_failures"],
        retry=row["retry"],
        retry_schedule_s=_floats(row["retry_schedule_s"]),
        max_consecutive_failures=row["max_consecutive_failures"],
        failure_window_max=row["failure_window_max"],
        failure_window_s=row["failure_window_s"],
        profile=row["profile"],
        profile_options={k: str(v) for k, v in orjson.loads(row["profile_options"]).items()},
        compress_events=row["compress_events"],
        body_template=row["body_template"],
        previous_secrets=tuple(
            (s["secret"], datetime.fromisoformat(s["rotated_at"]))
            for s in orjson.loads(row["previous_secrets"])
        ),
        # Taken when the query selects them (for log lines and per-tenant metrics).
        name=row["name"],
        tenant=row["tenant"],
    )


def _floats(values: Sequence[int] | None) -> tuple[float, ...] | None:
    return None if values is None else tuple(float(v) for v in values)


def _pairs(outcomes: Iterable[Outcome]) -> tuple[list[int], list[int]]:
    webhook_ids: list[int] = []
    event_ids: list[int] = []
    for outcome in outcomes:
        webhook_ids.extend([outcome.webhook_id] * len(outcome.event_ids))
        event_ids.extend(outcome.event_ids)
    return webhook_ids, event_ids


def _errors(outcomes: Sequence[Outcome]) -> list[str | None]:
    return [o.error for o in outcomes for _ in o.event_ids]


def _endpoint_tallies(outcomes: Sequence[Outcome]) -> tuple[list[int], list[bool], list[int]]:
    """Per endpoint, in completion order: did a success reset the count, and how many failures
    came after the last success (or in all, when none succeeded)."""
    tally: dict[int, tuple[bool, int]] = {}
    for outcome in outcomes:
        if not outcome.sent or not (outcome.success or outcome.counts):
            continue
        reset, failures = tally.get(outcome.webhook_id, (False, 0))
        tally[outcome.webhook_id] = (True, 0) if outcome.success else (reset, failures + 1)
    ids = list(tally)
    return ids, [tally[i][0] for i in ids], [tally[i][1] for i in ids]


def _columns(logs: Sequence[LogRow]) -> list[list[Any]]:
    """Log rows as one array per column, for complete_and_log."""
    return [
        [log.request_id for log in logs],
        [log.webhook_id for log in logs],
        ["{" + ",".join(map(str, log.event_ids)) + "}" for log in logs],
        [log.attempt for log in logs],
        [log.delivered_at for log in logs],
        [log.duration_ms for log in logs],
        [log.method for log in logs],
        [log.url for log in logs],
        [log.request_headers for log in logs],
        [log.request_body for log in logs],
        [log.status_code for log in logs],
        [log.response_headers for log in logs],
        [log.response_body for log in logs],
        [log.success for log in logs],
        [log.error for log in logs],
        [log.note for log in logs],
        [log.request_body_size for log in logs],
        [log.response_body_size for log in logs],
    ]
