"""`webhook-engine tail`: follow deliveries as they are recorded in webhook_logs, a line each.

One query per interval. Rows are read in (delivered_at, request_id) order after the last one
printed. delivered_at is when a request *started*, and a slow request is recorded after faster
ones that started later, so each poll also looks back `lookback_s` (the longest a request can
take, plus a margin) for rows that completed since the previous poll, and skips the ones it has
printed: the cost of a poll is an index range over that window of webhook_logs.
"""

from __future__ import annotations

import asyncio
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO
from uuid import UUID

import orjson

from engine.aio import wait_first
from engine.db.ops import OpsReader, TailFilter
from engine.wire.redact import safe_url

_BEFORE_ALL = UUID(int=0)
# Clock differences between daemons and the database, and the recorder's flush delay.
_MARGIN_S = 5.0
_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")


@dataclass(frozen=True, kw_only=True, slots=True)
class TailOptions:
    where: TailFilter
    since: str | None = None
    as_json: bool = False
    interval_s: float = 1.0
    # The longest a request can take (delivery.total_timeout_s) plus a margin.
    lookback_s: float = 35.0
    # Rows printed per poll at most (one query per interval, whatever the rate).
    page_rows: int = 5000


def parse_since(text: str, now: datetime) -> datetime:
    """Pure: `10m`, `1h`, `30s`, `2d` before `now`, or an ISO 8601 time (UTC when no offset)."""
    match = _DURATION.match(text)
    if match:
        return now - timedelta(seconds=float(match[1]) * _UNITS_S[match[2]])
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since {text!r}: give a duration such as 30s, 10m, 1h, 2d, "
            "or a time such as 2026-11-25T13:00:00Z"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def format_line(row: dict[str, Any]) -> str:
    """Pure: one log row as a line of text."""
    at = row["delivered_at"].astimezone(UTC)
    name = f" {row['name']}" if row.get("name") else ""
    status = str(row["status_code"]) if row["status_code"] is not None else "---"
    events = row["events"]
    parts = [
        at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z",
        f"#{row['webhook_id']}{name}",
        f"{row['method']} {safe_url(row['url'])}",
        status,
        f"{row['duration_ms']}ms",
        f"{events} event{'s' if events != 1 else ''}",
    ]
    if row["attempt"] > 1:
        parts.append(f"attempt {row['attempt']}")
    if not row["success"]:
        parts.append(f"error: {' '.join((row['error'] or 'failed').split())}")
    return "  ".join(parts)


def json_line(row: dict[str, Any]) -> str:
    clean = {k: v for k, v in row.items() if k != "polled_at"}
    clean["url"] = safe_url(clean["url"])
    clean["request_id"] = str(clean["request_id"])  # asyncpg's UUID type is not orjson's
    return orjson.dumps(clean, option=orjson.OPT_UTC_Z).decode()


async def follow(
    reader: OpsReader, options: TailOptions, stop: asyncio.Event, out: TextIO = sys.stdout
) -> None:
    """Print recorded requests until `stop` is set."""
    started = await reader.database_now()
    if options.since is not None:
        floor = parse_since(options.since, started)
        cursor, completed_since = (floor, _BEFORE_ALL), floor
    else:
        # From now on: what starts from now, and what started earlier but completes from now.
        floor = started - timedelta(seconds=options.lookback_s)
        cursor, completed_since = (started, _BEFORE_ALL), started
    seen: dict[UUID, datetime] = {}
    while not stop.is_set():
        window_start = max(cursor[0] - timedelta(seconds=options.lookback_s), floor)
        page = await reader.tail(
            after=cursor,
            window_start=window_start,
            completed_since=completed_since,
            where=options.where,
            limit=options.page_rows,
        )
        for record in page.rows:
            row = dict(record)
            key = (row["delivered_at"], row["request_id"])
            if row["request_id"] in seen:
                continue
            seen[row["request_id"]] = row["delivered_at"]
            cursor = max(cursor, key)
            out.write((json_line(row) if options.as_json else format_line(row)) + "\n")
        out.flush()
        completed_since = page.polled_at - timedelta(seconds=_MARGIN_S)
        horizon = cursor[0] - timedelta(seconds=options.lookback_s)
        seen = {k: at for k, at in seen.items() if at >= horizon}
        await wait_first(stop.wait(), within_s=options.interval_s)
