"""Serving the API: inside `webhook-engine run` (a side loop of the daemon) or alone with
`webhook-engine api`, so the API and delivery can run on different hosts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from aiohttp import web

from engine.api.app import create_app
from engine.config import ApiConfig, Config, listen_address
from engine.db.api_store import ApiStore

log = structlog.get_logger("engine.api")


@asynccontextmanager
async def serving(store: ApiStore, settings: ApiConfig, host: str, port: int) -> AsyncIterator[str]:
    """Serve the API on host:port (0: any free port) until the block ends; yields its base URL."""
    # aiohttp answers a request line over 8190 bytes itself, in text/plain; a long query (a
    # pasted cursor, a long `q`) should reach our handlers and get a problem document instead.
    runner = web.AppRunner(
        create_app(store, settings),
        access_log=None,
        handle_signals=False,
        max_line_size=65536,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        url = f"http://{'[' + bound_host + ']' if ':' in bound_host else bound_host}:{bound_port}"
        log.info("api.listening", url=url)
        yield url
    finally:
        await runner.cleanup()


class ApiServer:
    """The API as a daemon side loop: serves until `stop` is set."""

    def __init__(self, config: Config) -> None:
        self._config = config

    async def run(self, stop: asyncio.Event) -> None:
        host, port = listen_address(self._config.api.listen, "api.listen")
        store = await ApiStore.open(
            self._config.database.dsn, pool_size=self._config.database.pool_size
        )
        try:
            async with serving(store, self._config.api, host, port):
                await stop.wait()
        finally:
            await store.close()
