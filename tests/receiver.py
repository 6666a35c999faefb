"""A real HTTP receiver on 127.0.0.1 that records every request and answers as told."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

Handler = Callable[[web.Request, bytes], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)


async def _ok(_request: web.Request, _body: bytes) -> web.StreamResponse:
    return web.Response(text="ok")


class Receiver:
    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl = ssl_context
        self.requests: list[Received] = []
        self.handlers: dict[str, Handler] = {}
        self.in_flight = 0
        self.max_total_in_flight = 0
        self.max_in_flight: dict[str, int] = {}
        self._current: dict[str, int] = {}
        self._changed = asyncio.Condition()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        scheme = "https" if self._ssl else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def on(self, path: str, handler: Handler) -> None:
        self.handlers[path] = handler

    def at(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._ssl)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def hang(self, _request: web.Request, _body: bytes) -> web.StreamResponse:
        """A handler that accepts the request and never answers (until the receiver stops)."""
        await self._closing.wait()
        return web.Response(text="too late")

    async def stop(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(
        self, predicate: Callable[[], bool], within_s: float = 10.0, what: str = "condition"
    ) -> None:
        async def _wait() -> None:
            async with self._changed:
                await self._changed.wait_for(predicate)

        try:
            await asyncio.wait_for(_wait(), within_s)
        except TimeoutError:
            raise AssertionError(
                f"receiver: {what} not met within {within_s}s ({len(self.requests)} requests)"
            ) from None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.in_flight += 1
        self.max_total_in_flight = max(self.max_total_in_flight, self.in_flight)
        self._current[path] = self._current.get(path, 0) + 1
        self.max_in_flight[path] = max(self.max_in_flight.get(path, 0), self._current[path])
        try:
            body = await request.read()
            self.requests.append(
                Received(method=request.method, path=path, headers=dict(request.headers), body=body)
            )
            async with self._changed:
                self._changed.notify_all()
            return await self.handlers.get(path, _ok)(request, body)
        finally:
            self.in_flight -= 1
            self._current[path] -= 1
