"""`webhook-engine status`: the webhook_status view as a table (or JSON lines), one row per
endpoint, so "why is endpoint X not receiving?" is one command."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from engine.db.ops import OpsReader
from engine.wire.redact import safe_url

# Columns of the table: header, view column. Errors are cut to this many characters in the
# table (the JSON has them whole).
_ERROR_WIDTH = 60
_COLUMNS = (
    ("ID", "id"),
    ("TENANT", "tenant"),
    ("NAME", "name"),
    ("URL", "url"),
    ("STATE", "state"),
    ("PENDING", "pending"),
    ("FAILED", "failed"),
    ("FAILS", "consecutive_failures"),
    ("LAST SUCCESS", "last_success_at"),
    ("LAST ERROR", "last_error"),
)


async def show(
    reader: OpsReader,
    webhook_ids: Sequence[int],
    tenant: str | None,
    *,
    as_json: bool,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Print the status of the given endpoints (all when none); 1 when an id names none."""
    rows = [dict(row) for row in await reader.status(webhook_ids, tenant)]
    for row in rows:
        row["url"] = safe_url(row["url"])
    if as_json:
        for row in rows:
            out.write(orjson.dumps(row, option=orjson.OPT_UTC_Z).decode() + "\n")
    elif rows:
        out.write(render_table(rows))
    found = {row["id"] for row in rows}
    missing = [i for i in dict.fromkeys(webhook_ids) if i not in found]
    if missing:
        existing = await reader.existing_webhooks(missing)
        for webhook_id in missing:
            if webhook_id in existing:
                err.write(f"webhook-engine: webhook {webhook_id} is not in tenant {tenant!r}\n")
            else:
                err.write(f"webhook-engine: there is no webhook {webhook_id}\n")
        return 2  # a usage error, as an unknown id is for every command
    if not rows and not as_json:
        where = f" in tenant {tenant!r}" if tenant is not None else ""
        err.write(f"webhook-engine: no webhooks{where}\n")
    return 0


def render_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Pure: rows of webhook_status as an aligned text table."""
    show_tenant = any(row["tenant"] for row in rows)
    columns = [(h, c) for h, c in _COLUMNS if show_tenant or c != "tenant"]
    cells = [[h for h, _ in columns]]
    cells += [[_cell(row, column) for _, column in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = [
        "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    ]
    return "\n".join(lines) + "\n"


def _cell(row: Mapping[str, Any], column: str) -> str:
    if column == "last_error":
        return _last_error(row)
    value = row[column]
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return format_time(value)
    return str(value) if value != "" else "-"


def _last_error(row: Mapping[str, Any]) -> str:
    if row["last_error_at"] is None:
        return "-"
    status = row["last_error_status"]
    message = " ".join((row["last_error"] or "").split())
    if status is not None and message == f"HTTP {status}":
        message = ""  # the status says it all
    if len(message) > _ERROR_WIDTH:
        message = message[: _ERROR_WIDTH - 1] + "…"
    parts = [format_time(row["last_error_at"]), f"HTTP {status}" if status else "", message]
    return " ".join(part for part in parts if part)


def format_time(value: datetime) -> str:
    """Pure: a time in UTC to the second, as `2026-11-25T13:40:42Z`."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
