"""The daemon's operator endpoints on [metrics] listen: /metrics, /healthz, /readyz."""

from __future__ import annotations

import asyncio

import orjson
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from engine.config import listen_address
from engine.db.ops import OpsReader
from engine.db.store import DB_ERRORS
from engine.ops.health import Check, Health
from engine.ops.metrics import Metrics

log = structlog.get_logger("engine.ops")


class OpsServer:
    def __init__(self, listen: str, metrics: Metrics, health: Health, reader: OpsReader) -> None:
        self._host, self._port = listen_address(listen)
        self._metrics = metrics
        self._health = health
        self._reader = reader
        # The bound port (the configured one, or the one picked for port 0); 0 until listening.
        self.port = 0

    async def run(self, stop: asyncio.Event) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._serve_metrics)
        app.router.add_get("/healthz", self._serve_health)
        app.router.add_get("/readyz", self._serve_ready)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port)
            try:
                await site.start()
            except OSError as exc:
                # The daemon stops (a side loop died): say which address, not just errno.
                log.error("ops.listen_failed", host=self._host, port=self._port, error=str(exc))
                raise
            self.port = _bound_port(runner) or self._port
            log.info("ops.listening", host=self._host, port=self.port)
            await stop.wait()
        finally:
            await runner.cleanup()

    async def _serve_metrics(self, _request: web.Request) -> web.Response:
        try:
            await self._metrics.refresh(self._reader)
        except DB_ERRORS as exc:
            # The pool has counted it; serve the counters with the gauges as last read.
            log.warning("ops.metrics_query_failed", error=f"{type(exc).__name__}: {exc}")
        body = self._metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _serve_health(self, _request: web.Request) -> web.Response:
        return _json(self._health.liveness())

    async def _serve_ready(self, _request: web.Request) -> web.Response:
        return _json(await self._health.readiness())


def _json(check: Check) -> web.Response:
    body = {"status": "ok" if check.ok else "failing", **check.detail}
    return web.Response(
        body=orjson.dumps(body), status=200 if check.ok else 503, content_type="application/json"
    )


def _bound_port(runner: web.AppRunner) -> int | None:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None
