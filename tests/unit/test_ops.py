"""Pure parts of the operator tools: URL and DSN redaction for logs, the summary's rounding, the
metrics outcome label, tail's --since and line format, the status table."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from engine.models import LogRow, Outcome, Webhook
from engine.ops.logfields import database_fields, endpoint_fields
from engine.ops.metrics import request_outcome
from engine.ops.stats import significant
from engine.ops.status import format_time, render_table
from engine.ops.tail import format_line, parse_since
from engine.wire.redact import safe_url

NOW = datetime(2026, 11, 25, 13, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("url", "safe"),
    [
        ("https://example.com/hook", "https://example.com/hook"),
        ("https://user:pw@example.com:8443/h?a=1", "https://example.com:8443/h?a=1"),
        ("http://user@example.com", "http://example.com"),
        ("https://example.com/h?token=abc&x=1", "https://example.com/h?token=********&x=1"),
        (
            "https://example.com/h?API_KEY=k&sig=s#frag",
            "https://example.com/h?API_KEY=********&sig=********#frag",
        ),
        ("https://example.com?access_token=t", "https://example.com?access_token=********"),
        ("https://example.com/@user/path", "https://example.com/@user/path"),
        ("not a url", "not a url"),
    ],
)
def test_safe_url(url: str, safe: str) -> None:
    assert safe_url(url) == safe


def test_endpoint_fields() -> None:
    webhook = Webhook(
        id=7,
        url="https://u:p@example.com/x",
        method="POST",
        auth_type="none",
        secret=None,
        basic_username=None,
        basic_password=None,
        headers={},
        maximum_events=1,
        maximum_size=1000,
        consecutive_failures=0,
        name="crm",
    )
    assert endpoint_fields(webhook) == {
        "webhook_id": 7,
        "webhook_name": "crm",
        "url": "https://example.com/x",
    }


@pytest.mark.parametrize(
    ("dsn", "env", "expected"),
    [
        ("postgresql://app:secret@db.internal:6432/orders", {}, ("db.internal", "6432", "orders")),
        ("postgres://app@[::1]:5433/x?sslmode=require", {}, ("::1", "5433", "x")),
        ("postgresql:///orders?host=/run/postgresql", {}, ("/run/postgresql", "5432", "orders")),
        ("postgresql://a:b@h1:5432,h2:5433/db", {}, ("h1:5432,h2:5433", "5432", "db")),
        ("host=pg port=5999 dbname=app password=secret", {}, ("pg", "5999", "app")),
        (None, {"PGHOST": "envhost", "PGDATABASE": "envdb"}, ("envhost", "5432", "envdb")),
    ],
)
def test_database_fields_never_hold_the_password(
    dsn: str | None, env: dict[str, str], expected: tuple[str, str, str]
) -> None:
    fields = database_fields(dsn, env)
    assert (fields["host"], fields["port"], fields["database"]) == expected
    assert "secret" not in str(fields)


def test_database_fields_defaults() -> None:
    fields = database_fields(None, {})
    assert fields["port"] == "5432" and fields["host"].startswith("localhost")


@pytest.mark.parametrize(
    ("value", "rounded"), [(0.012345, 0.0123), (1234.5, 1230.0), (0.0, 0.0), (2.0, 2.0)]
)
def test_rates_keep_three_significant_digits(value: float, rounded: float) -> None:
    assert significant(value) == rounded


def _outcome(success: bool, status: int | None, error: str | None, sent: bool = True) -> Outcome:
    webhook = Webhook(
        id=1, url="http://x/", method="POST", auth_type="none", secret=None,
        basic_username=None, basic_password=None, headers={}, maximum_events=1,
        maximum_size=1, consecutive_failures=0,
    )  # fmt: skip
    log = LogRow(
        request_id=str(uuid.uuid4()), webhook_id=1, event_ids=[1], attempt=1, delivered_at=NOW,
        duration_ms=5, method="POST", url="http://x/", request_headers="{}", request_body="",
        status_code=status, response_headers=None, response_body=None, success=success,
        error=error, note=None,
    )  # fmt: skip
    return Outcome(webhook=webhook, event_ids=[1], success=success, sent=sent, error=error, log=log)


@pytest.mark.parametrize(
    ("success", "status", "error", "label"),
    [
        (True, 200, None, "success"),
        (False, 500, "HTTP 500", "http_error"),
        (False, 302, "HTTP 302 redirect to 'x' not followed", "http_error"),
        (False, None, "timeout: no complete response within 5s", "timeout"),
        (False, None, "connection failed: Connection refused", "connection_error"),
        (
            False,
            None,
            "connection closed by the server before a complete response",
            "connection_error",
        ),
        (False, None, "TLS certificate error: expired", "connection_error"),
        (False, None, "request not built: bad template", "other"),
    ],
)
def test_request_outcome_label(
    success: bool, status: int | None, error: str | None, label: str
) -> None:
    assert request_outcome(_outcome(success, status, error)) == label


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10m", NOW - timedelta(minutes=10)),
        ("1h", NOW - timedelta(hours=1)),
        ("30s", NOW - timedelta(seconds=30)),
        ("1.5d", NOW - timedelta(hours=36)),
        ("2026-11-25T12:00:00Z", datetime(2026, 11, 25, 12, tzinfo=UTC)),
        ("2026-11-25T12:00:00", datetime(2026, 11, 25, 12, tzinfo=UTC)),
        ("2026-11-25T13:00:00+01:00", datetime(2026, 11, 25, 12, tzinfo=UTC)),
    ],
)
def test_parse_since(text: str, expected: datetime) -> None:
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "10", "-5m", "10 minutes", ""])
def test_parse_since_refuses_with_a_hint(text: str) -> None:
    with pytest.raises(ValueError, match="30s, 10m, 1h, 2d"):
        parse_since(text, NOW)


def _log_row(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "request_id": uuid.uuid4(), "webhook_id": 4, "name": "crm",
        "delivered_at": NOW + timedelta(microseconds=123456), "duration_ms": 35,
        "method": "POST", "url": "https://u:p@example.com/h", "status_code": 200,
        "success": True, "error": None, "events": 3, "attempt": 1,
    }  # fmt: skip
    row.update(overrides)
    return row


def test_tail_line_format() -> None:
    assert format_line(_log_row()) == (
        "2026-11-25T13:00:00.123Z  #4 crm  POST https://example.com/h  200  35ms  3 events"
    )
    failed = _log_row(
        name="", status_code=None, success=False, events=1, attempt=3,
        error="connection failed:\nrefused",
    )  # fmt: skip
    assert format_line(failed) == (
        "2026-11-25T13:00:00.123Z  #4  POST https://example.com/h  ---  35ms  1 event  "
        "attempt 3  error: connection failed: refused"
    )


def _status_row(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": 1, "tenant": "", "name": "orders", "url": "https://example.com/h",
        "state": "active", "pending": 0, "failed": 0, "consecutive_failures": 0,
        "last_success_at": NOW, "last_error_at": None, "last_error_status": None,
        "last_error": None,
    }  # fmt: skip
    row.update(overrides)
    return row


def test_status_table() -> None:
    table = render_table(
        [
            _status_row(),
            _status_row(
                id=12,
                name="",
                state="backing off until 2026-11-25T13:30:00Z",
                pending=4,
                consecutive_failures=2,
                last_success_at=None,
                last_error_at=NOW,
                last_error_status=503,
                last_error="HTTP 503",
            ),
            _status_row(
                id=13,
                last_error_at=NOW,
                last_error="timeout: " + "x" * 100,
            ),
        ]
    )
    lines = table.splitlines()
    assert lines[0].split() == [
        "ID", "NAME", "URL", "STATE", "PENDING", "FAILED", "FAILS", "LAST", "SUCCESS", "LAST",
        "ERROR",
    ]  # fmt: skip
    assert lines[1].split() == [
        "1", "orders", "https://example.com/h", "active", "0", "0", "0", "2026-11-25T13:00:00Z",
        "-",
    ]  # fmt: skip
    assert "backing off until 2026-11-25T13:30:00Z" in lines[2]
    assert lines[2].split()[-4:] == ["-", "2026-11-25T13:00:00Z", "HTTP", "503"]
    assert lines[3].endswith("…") and len(lines[3].split("Z timeout: ")[1]) == 60 - 9
    # Columns line up.
    assert len({line.index("https://") for line in lines[1:]}) == 1


def test_status_table_shows_tenant_only_when_used() -> None:
    assert "TENANT" not in render_table([_status_row()])
    assert "TENANT" in render_table([_status_row(tenant="acme")])


def test_format_time_is_utc() -> None:
    from datetime import timezone

    local = datetime(2026, 11, 25, 14, 0, tzinfo=timezone(timedelta(hours=1)))
    assert format_time(local) == "2026-11-25T13:00:00Z"
