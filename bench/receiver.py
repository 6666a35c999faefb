"""The receiver: an aiohttp server in its own process that records every POST /hook, and the
driver's client for it. Only loopback addresses are used."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import signal
import socket
import time
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from bench import BenchError
from bench.tally import Record
from engine.aio import run_loop

POLL_S = 0.05


# --- receiver: runs in its own process ---------------------------------------------------------


class ReceiverState:
    """One (receive wall time, event id) record per event POSTed to /hook (a body is one event
    or an array of them); /count, /stats and /reset."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.ids: set[int] = set()
        self.posts = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self.hook)
        app.router.add_get("/count", self.count)
        app.router.add_get("/stats", self.stats)
        app.router.add_get("/reset", self.reset)
        return app

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        received_at = time.time()
        parsed = orjson.loads(body)
        self.posts += 1
        for event in parsed if isinstance(parsed, list) else [parsed]:
            event_id = int(event["id"])
            self.records.append((received_at, event_id))
            self.ids.add(event_id)
        return web.Response(text="ok")

    async def count(self, _request: web.Request) -> web.Response:
        return _json_response({"requests": self.posts, "distinct": len(self.ids)})

    async def stats(self, _request: web.Request) -> web.Response:
        return _json_response({"records": self.records})

    async def reset(self, _request: web.Request) -> web.Response:
        self.records, self.ids, self.posts = [], set(), 0
        return _json_response({"reset": True})


def _json_response(value: object) -> web.Response:
    return web.Response(body=orjson.dumps(value), content_type="application/json")


def serve_receiver(channel: Connection) -> None:
    """Receiver process entry point: send the port over `channel`, serve until it closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    run_loop(_serve_until_closed(channel))


async def _serve_until_closed(channel: Connection) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    runner = web.AppRunner(ReceiverState().app(), access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    channel.send(sock.getsockname()[1])
    closed = asyncio.Event()
    # Readable only at EOF: the driver closed its end, or died.
    asyncio.get_running_loop().add_reader(channel.fileno(), closed.set)
    await closed.wait()
    await runner.cleanup()


# --- receiver: the driver's side ---------------------------------------------------------------


class ReceiverClient:
    def __init__(self, base_url: str, pid: int, session: aiohttp.ClientSession) -> None:
        self.base_url = base_url
        self.pid = pid
        self._session = session

    @property
    def hook_url(self) -> str:
        return f"{self.base_url}/hook"

    async def _get(self, path: str) -> Any:
        async with self._session.get(self.base_url + path) as resp:
            resp.raise_for_status()
            return orjson.loads(await resp.read())

    async def counts(self) -> tuple[int, int]:
        """(requests, distinct event ids) since the last reset."""
        counts = await self._get("/count")
        return int(counts["requests"]), int(counts["distinct"])

    async def records(self) -> list[Record]:
        return [(float(t), int(i)) for t, i in (await self._get("/stats"))["records"]]

    async def reset(self) -> None:
        await self._get("/reset")

    async def wait_distinct(self, target: int) -> None:
        # The receiver lives in another process: there is no event to wait on, so poll.
        while (await self.counts())[1] < target:  # noqa: ASYNC110
            await asyncio.sleep(POLL_S)


@contextlib.asynccontextmanager
async def receiver_process() -> AsyncIterator[ReceiverClient]:
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(
        target=serve_receiver, args=(theirs,), name="bench-receiver", daemon=True
    )
    process.start()
    theirs.close()
    try:
        port = await asyncio.to_thread(_receive_port, ours)
        async with aiohttp.ClientSession() as session:
            assert process.pid is not None
            yield ReceiverClient(f"http://127.0.0.1:{port}", process.pid, session)
    finally:
        ours.close()
        await asyncio.to_thread(_stop_process, process)


def _receive_port(channel: Connection) -> int:
    if not channel.poll(30.0):
        raise BenchError("the receiver process did not report its port within 30 s")
    return int(channel.recv())


def _stop_process(process: BaseProcess) -> None:
    process.join(5.0)
    if process.is_alive():
        process.terminate()
        process.join(5.0)
    if process.is_alive():
        process.kill()
        process.join()
