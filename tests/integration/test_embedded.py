"""`webhook-engine run` with no database configured anywhere: the embedded Postgres, as a user
gets it after `pip install` on a machine without a Postgres server."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import asyncpg
import pytest

from engine.config import DeliveryConfig
from engine.db.dsn import LIBPQ_VARIABLES
from engine.ops.embedded import EmbeddedPostgres
from tests.daemon_process import DaemonProcess
from tests.receiver import Receiver


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not under tmp_path: as root the server runs as another user, who must be able to pass
    # through the parents (pytest's are 0700; /tmp is not).
    parent = Path(tempfile.mkdtemp(prefix="webhook-engine-embedded-"))
    yield parent / "postgres"
    server = EmbeddedPostgres(parent / "postgres")
    if server.running():  # a failed test must not leave a server behind
        server.stop()
    shutil.rmtree(parent)


def clean_env() -> dict[str, str]:
    """This environment without any way to name a database."""
    drop = {"WEBHOOK_ENGINE_DSN", "NOTIFY_SOCKET", "STATE_DIRECTORY", *LIBPQ_VARIABLES}
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("PG")}


def write_config(path: Path) -> Path:
    """Quick polls, no [database] section; loopback receivers allowed where the SSRF guard
    exists (its `allow_networks` key is unknown to older configs)."""
    lines = ["[delivery]", "poll_interval_s = 0.5", "[recorder]", "flush_interval_ms = 2.0"]
    if "allow_networks" in {f.name for f in fields(DeliveryConfig)}:
        lines.insert(1, 'allow_networks = ["127.0.0.0/8", "::1/128"]')
    path.write_text("\n".join(lines) + "\n")
    return path


async def cli(*args: str) -> tuple[int, str, str]:
    """`webhook-engine *args` in the clean environment: exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "engine.cli",
        *args,
        env=clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def printed_dsn(data_dir: Path) -> str:
    code, out, err = await cli("dsn", "--data-dir", str(data_dir))
    assert code == 0, err
    return out.strip()


def logged(daemon: DaemonProcess, event: str) -> dict[str, object]:
    return next(e for e in daemon.events if e.get("event") == event)


async def test_run_without_a_dsn_starts_embedded_postgres_and_delivers(
    data_dir: Path, receiver: Receiver, daemons: list[DaemonProcess], tmp_path: Path
) -> None:
    config = write_config(tmp_path / "c.toml")
    args = ("run", "--config", str(config), "--data-dir", str(data_dir))
    daemon = await DaemonProcess.start(*args, env=clean_env())
    daemons.append(daemon)
    await daemon.wait_for_event("listener.connected", within_s=60)

    dsn = await printed_dsn(data_dir)
    ready = logged(daemon, "embedded.ready")
    password = dsn.split("@")[0].rsplit(":", 1)[1]
    assert ready["dsn"] == dsn.replace(password, "********")
    assert password not in "\n".join(daemon.raw_lines), "the password was logged"
    assert dsn.startswith("postgresql://postgres:") and "@127.0.0.1:" in dsn

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO webhooks (url, topics) VALUES ($1, '{order.*}')", receiver.url("/hook")
        )
        await conn.execute(
            "INSERT INTO webhook_events (topic, payload) VALUES ('order.created', '{\"n\": 1}')"
        )
    finally:
        await conn.close()
    await receiver.wait_for(lambda: len(receiver.requests) == 1, what="the event delivered")
    assert json.loads(receiver.requests[0].body)["data"] == {"n": 1}

    assert await daemon.stop() == 0, daemon.output()
    assert daemon.count("embedded.stopped") == 1
    assert not EmbeddedPostgres(data_dir).running()
    with pytest.raises(OSError):
        await asyncpg.connect(dsn, timeout=5)

    # The next start finds the same data behind the same DSN.
    again = await DaemonProcess.start(*args, env=clean_env())
    daemons.append(again)
    await again.wait_for_event("listener.connected", within_s=60)
    assert await printed_dsn(data_dir) == dsn
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM webhook_logs WHERE success") == 1
    finally:
        await conn.close()
    assert await again.stop() == 0, again.output()


async def test_dsn_without_an_embedded_server_says_how_to_create_it(data_dir: Path) -> None:
    code, out, err = await cli("dsn", "--data-dir", str(data_dir))
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1 and "`webhook-engine run` creates it" in err


@pytest.fixture
def occupied_dir(data_dir: Path) -> Path:
    data_dir.mkdir()
    (data_dir / "notes.txt").write_text("mine")
    return data_dir


async def test_a_data_dir_holding_something_else_is_refused(occupied_dir: Path) -> None:
    data_dir = occupied_dir
    code, _, err = await cli("run", "--data-dir", str(data_dir))
    assert code == 1
    assert err == (
        f"webhook-engine: {data_dir} is not empty and holds no embedded Postgres: "
        "choose another --data-dir\n"
    )
    assert sorted(p.name for p in data_dir.iterdir()) == ["notes.txt"]
