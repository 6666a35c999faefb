"""The webhook_status view, `webhook-engine status` and `webhook-engine tail`, run as real
processes against a database a real daemon delivers from."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from typing import Any

import asyncpg
from aiohttp import web

from tests.conftest import wait_until
from tests.daemon_process import DaemonProcess
from tests.integration.test_delivery import EngineFactory, add_event, add_events, add_webhook
from tests.receiver import Receiver


async def run_cli(*args: str) -> tuple[int, list[str]]:
    process = await DaemonProcess.start(*args)
    code = await asyncio.wait_for(process.proc.wait(), 60)
    await asyncio.wait_for(process._reader, 10)
    return code, process.raw_lines


async def wait_for_lines(
    process: DaemonProcess,
    predicate: Callable[[list[str]], bool],
    within_s: float = 15.0,
    what: str = "lines",
) -> None:
    async def check() -> bool:
        if process.proc.returncode is not None:
            raise AssertionError(f"exited early: {process.output()}")
        return predicate(process.raw_lines)

    try:
        await wait_until(check, within_s=within_s, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; output so far:\n{process.output()}") from None


async def status_rows(db: asyncpg.Connection) -> dict[int, dict[str, Any]]:
    return {row["id"]: dict(row) for row in await db.fetch("SELECT * FROM webhook_status")}


async def test_status_view_says_why_an_endpoint_is_not_receiving(
    dsn: str, db: asyncpg.Connection, receiver: Receiver, engine: EngineFactory
) -> None:
    async def down(_request: web.Request, _body: bytes) -> web.StreamResponse:
        return web.Response(status=503, text="maintenance")

    receiver.on("/down", down)
    healthy = await add_webhook(db, receiver.url("/ok"), ["*"], name="orders")
    failing = await add_webhook(db, receiver.url("/down"), ["*"], name="crm")
    paused = await add_webhook(db, receiver.url("/p"), ["*"], status="paused", tenant="acme")
    gone = await add_webhook(db, receiver.url("/g"), ["none"])
    await db.execute(
        "UPDATE webhooks SET status = 'disabled', disabled_reason = 'HTTP 410 Gone' WHERE id = $1",
        gone,
    )
    await add_events(db, 3)
    # The paused endpoint belongs to tenant acme: only acme's events reach it.
    await db.execute(
        "INSERT INTO webhook_events (tenant, topic) "
        "SELECT 'acme', 'order.created' FROM generate_series(1, 3)"
    )
    engine(retry={"schedule_s": [600.0]})

    async def settled() -> bool:
        rows = await status_rows(db)
        return bool(rows[healthy]["pending"] == 0 and rows[failing]["consecutive_failures"] == 1)

    await wait_until(settled, what="healthy delivered, failing backing off")
    rows = await status_rows(db)
    ok, bad = rows[healthy], rows[failing]
    assert ok["state"] == "active" and ok["name"] == "orders"
    assert ok["last_success_at"] is not None and ok["last_error_at"] is None
    assert bad["state"].startswith("backing off until 20")
    assert bad["next_retry_at"] is not None and bad["pending"] == 3 and bad["failed"] == 0
    assert bad["last_error_status"] == 503 and bad["last_error"] == "HTTP 503"
    assert bad["last_success_at"] is None
    assert rows[paused]["state"] == "paused" and rows[paused]["pending"] == 3
    assert rows[paused]["tenant"] == "acme"
    assert rows[gone]["state"] == "disabled: HTTP 410 Gone" and rows[gone]["pending"] == 0

    code, lines = await run_cli("status", "--dsn", dsn)
    assert code == 0, lines
    assert lines[0].split()[:4] == ["ID", "TENANT", "NAME", "URL"]
    assert len(lines) == 5
    failing_line = next(line for line in lines if line.startswith(f"{failing} "))
    assert "backing off until" in failing_line and "HTTP 503" in failing_line

    code, lines = await run_cli("status", "--dsn", dsn, "--json", str(failing), str(paused))
    assert code == 0, lines
    listed = [json.loads(line) for line in lines]
    assert [r["id"] for r in listed] == [failing, paused]
    assert listed[0]["url"] == receiver.url("/down")

    code, lines = await run_cli("status", "--dsn", dsn, "--tenant", "acme", "--json")
    assert code == 0 and [json.loads(line)["id"] for line in lines] == [paused]


async def test_status_names_ids_that_do_not_exist(dsn: str, db: asyncpg.Connection) -> None:
    known = await add_webhook(db, "http://user:pw@127.0.0.1:9/x?api_key=k1", ["*"])
    code, lines = await run_cli("status", "--dsn", dsn, str(known), "999")
    assert code == 2
    assert "webhook-engine: there is no webhook 999" in lines
    row = next(line for line in lines if line.startswith(f"{known} "))
    assert "http://127.0.0.1:9/x?api_key=********" in row
    assert "pw" not in row and "k1" not in row
    code, lines = await run_cli("status", "--dsn", dsn, "--tenant", "other", str(known))
    assert code == 2 and lines == [f"webhook-engine: webhook {known} is not in tenant 'other'"]


async def test_tail_follows_deliveries_live(
    dsn: str,
    db: asyncpg.Connection,
    receiver: Receiver,
    engine: EngineFactory,
    daemons: list[DaemonProcess],
) -> None:
    release = asyncio.Event()

    async def slow(_request: web.Request, _body: bytes) -> web.StreamResponse:
        await release.wait()
        return web.Response(status=200)

    async def down(_request: web.Request, _body: bytes) -> web.StreamResponse:
        return web.Response(status=500)

    receiver.on("/slow", slow)
    receiver.on("/down", down)
    fast = await add_webhook(db, receiver.url("/fast"), ["fast"], name="fast-one")
    slow_id = await add_webhook(db, receiver.url("/slow"), ["slow"], name="slow-one")
    broken = await add_webhook(db, receiver.url("/down"), ["down"], retry=False)
    engine()
    text = await DaemonProcess.start("tail", "--dsn", dsn, "--since", "1m", "--interval", "0.1")
    failures = await DaemonProcess.start(
        "tail", "--dsn", dsn, "--failures", "--json", "--interval", "0.1", "--since", "1m"
    )
    daemons += [text, failures]

    # The slow request starts first and is recorded after the fast ones: tail must still show it.
    await add_event(db, "slow", {"n": 0})
    await receiver.wait_for(lambda: receiver.in_flight == 1, what="slow request in flight")
    for n in range(3):
        await add_event(db, "fast", {"n": n})
    await wait_for_lines(text, lambda lines: len(lines) == 3, what="three fast deliveries")
    assert all(
        f"#{fast} fast-one  POST {receiver.url('/fast')}  200  " in x for x in text.raw_lines
    )
    assert all(x.endswith("1 event") for x in text.raw_lines)
    release.set()
    await wait_for_lines(text, lambda lines: len(lines) == 4, what="the slow one, recorded late")
    assert f"#{slow_id} slow-one" in text.raw_lines[3]

    await add_event(db, "down", {"n": 1})
    await wait_for_lines(text, lambda lines: len(lines) == 5, what="the failure")
    assert f"#{broken}  POST {receiver.url('/down')}  500  " in text.raw_lines[4]
    assert text.raw_lines[4].endswith("1 event  error: HTTP 500")
    await wait_for_lines(failures, lambda lines: len(lines) == 1, what="the failure, as JSON")
    failure = json.loads(failures.raw_lines[0])
    assert failure["webhook_id"] == broken and failure["status_code"] == 500
    assert failure["success"] is False and failure["events"] == 1
    # One more delivery, seen only after later polls: nothing came twice meanwhile.
    await add_event(db, "fast", {"n": 3})
    await wait_for_lines(text, lambda lines: len(lines) >= 6, what="the last delivery")
    for process in (text, failures):
        assert await process.stop(signal.SIGTERM) == 0, process.output()
    assert len(text.raw_lines) == 6, text.output()
    assert sum("slow-one" in line for line in text.raw_lines) == 1
    assert len(failures.raw_lines) == 1, failures.output()


async def test_tail_refuses_bad_arguments(dsn: str) -> None:
    code, lines = await run_cli("tail", "--dsn", dsn, "--webhook", "999")
    assert code == 2 and lines == ["webhook-engine: there is no webhook 999"]
    code, lines = await run_cli("tail", "--dsn", dsn, "--since", "yesterday")
    assert code == 2 and len(lines) == 1 and "--since 'yesterday'" in lines[0]


async def test_status_on_a_database_without_the_schema(empty_dsn: str) -> None:
    code, lines = await run_cli("status", "--dsn", empty_dsn)
    assert code == 2
    assert lines == ['webhook-engine: relation "webhook_status" does not exist: run '
                     "`webhook-engine init-db`"]  # fmt: skip
