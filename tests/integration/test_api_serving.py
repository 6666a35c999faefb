"""The API served by the real CLI: inside `run` when [api] listen is set, and alone by `api`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from engine.db.api_store import ApiStore
from tests.daemon_process import DaemonProcess, write_config


async def get(url: str, key: str = "") -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as answer:
        return answer.status


def listening_url(daemon: DaemonProcess) -> str:
    return next(str(e["url"]) for e in daemon.events if e.get("event") == "api.listening")


async def test_run_serves_the_api_when_listen_is_set(dsn: str, tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", dsn, api={"listen": "127.0.0.1:0"})
    daemon = await DaemonProcess.start("run", "--config", str(config))
    try:
        await daemon.wait_for_event("api.listening")
        await daemon.wait_for_event("daemon.started")
        assert await get(listening_url(daemon) + "/v1/health") == 200
        assert await get(listening_url(daemon) + "/v1/webhooks") == 401
    finally:
        assert await daemon.stop() == 0, daemon.output()


async def test_run_without_listen_serves_no_api(dsn: str, tmp_path: Path) -> None:
    daemon = await DaemonProcess.start(
        "run", "--config", str(write_config(tmp_path / "c.toml", dsn))
    )
    try:
        await daemon.wait_for_event("daemon.started")
        assert daemon.count("api.listening") == 0
    finally:
        assert await daemon.stop() == 0, daemon.output()


async def test_api_command_serves_alone(dsn: str) -> None:
    store = await ApiStore.open(dsn, pool_size=1)
    _, key = await store.create_key(tenant=None, read_only=True, name="t")
    await store.close()
    daemon = await DaemonProcess.start("api", "--dsn", dsn, "--listen", "127.0.0.1:0")
    try:
        await daemon.wait_for_event("api.listening")
        assert await get(listening_url(daemon) + "/v1/webhooks/count", key) == 200
    finally:
        assert await daemon.stop() == 0, daemon.output()


async def test_api_command_refuses_a_database_without_the_schema(empty_dsn: str) -> None:
    daemon = await DaemonProcess.start("api", "--dsn", empty_dsn, "--listen", "127.0.0.1:0")
    assert await asyncio.wait_for(daemon.proc.wait(), 30) == 2
    await daemon.stop()
    assert "init-db" in daemon.output()
