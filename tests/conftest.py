from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import pytest

from engine import daemon
from engine.config import Config
from tests import pg
from tests.daemon_process import DaemonProcess
from tests.receiver import Receiver
from tests.settings import test_settings


@pytest.fixture(scope="session")
def admin_dsn() -> Iterator[str]:
    with pg.server_dsn() as dsn:
        yield dsn


@pytest.fixture(scope="session")
def template_db(admin_dsn: str) -> Iterator[str]:
    name = asyncio.run(pg.create_template(admin_dsn))
    yield name
    asyncio.run(pg.drop_database(admin_dsn, name))


@pytest.fixture
async def dsn(admin_dsn: str, template_db: str) -> AsyncIterator[str]:
    """A fresh database with the schema, for this test only."""
    name = await pg.create_database(admin_dsn, template_db)
    yield pg.with_database(admin_dsn, name)
    await pg.drop_database(admin_dsn, name)


@pytest.fixture
async def empty_dsn(admin_dsn: str) -> AsyncIterator[str]:
    """A fresh database without the schema."""
    name = await pg.create_database(admin_dsn, None)
    yield pg.with_database(admin_dsn, name)
    await pg.drop_database(admin_dsn, name)


@pytest.fixture
async def db(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn)
    yield conn
    await conn.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


def make_config(dsn: str, **sections: dict[str, Any]) -> Config:
    """The test settings (tests/settings.py) as a Config; sections override."""
    return Config.from_dict(test_settings(dsn, **sections), source="test")


class RunningEngine:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.stop_event = asyncio.Event()
        self.task: asyncio.Task[int] = asyncio.create_task(
            daemon.run(config, stop=self.stop_event, handle_signals=False), name="engine-under-test"
        )

    async def stop(self) -> int:
        self.stop_event.set()
        return await asyncio.wait_for(self.task, 30)


@pytest.fixture
async def engine(dsn: str) -> AsyncIterator[Callable[..., RunningEngine]]:
    """Start the daemon in this event loop: `engine(delivery={...})`. Stopped at teardown."""
    running: list[RunningEngine] = []

    def start(**sections: dict[str, Any]) -> RunningEngine:
        handle = RunningEngine(make_config(dsn, **sections))
        running.append(handle)
        return handle

    yield start
    for handle in running:
        # Surfaces a daemon that crashed during the test.
        assert await handle.stop() == 0, "the daemon exited with an error"


async def wait_until(
    check: Callable[[], Awaitable[bool]], within_s: float = 10.0, what: str = "condition"
) -> None:
    """Poll an async condition (e.g. a query) until true, or fail after `within_s` seconds."""
    deadline = time.monotonic() + within_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {within_s}s")
        await asyncio.sleep(0.02)


@pytest.fixture
async def daemons() -> AsyncIterator[list[DaemonProcess]]:
    """CLI processes a test starts (append them); any still running at teardown get SIGTERM,
    so an embedded Postgres they started is stopped too, and are killed if that takes too long."""
    started: list[DaemonProcess] = []
    yield started
    for process in started:
        if process.proc.returncode is None:
            process.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.proc.wait(), 15)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.proc.kill()
                await process.proc.wait()
