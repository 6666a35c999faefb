"""systemd notifications over a real unix datagram socket, as systemd's NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from engine.ops.watchdog import Watchdog, watchdog_timeout_s
from tests.integration.test_delivery import EngineFactory


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    # A short path: unix socket paths stop at 107 bytes, pytest's tmp_path can be longer.
    directory = tempfile.mkdtemp(prefix="webhook-engine-notify-")
    path = str(Path(directory) / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield sock
    sock.close()
    shutil.rmtree(directory)


async def receive(sock: socket.socket, within_s: float = 10.0) -> str:
    data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 4096), within_s)
    return data.decode()


def pending(sock: socket.socket) -> list[str]:
    messages: list[str] = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


async def test_daemon_says_ready_pings_the_watchdog_and_says_stopping(
    notify_socket: socket.socket, engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    running = engine()
    assert await receive(notify_socket) == "READY=1"
    started = time.monotonic()
    pings = [await receive(notify_socket) for _ in range(3)]
    assert pings == ["WATCHDOG=1"] * 3
    # Every half timeout (0.2 s), not in a tight loop.
    assert time.monotonic() - started >= 0.3
    assert await running.stop() == 0
    assert "STOPPING=1" in pending(notify_socket)


async def test_no_watchdog_pings_without_watchdog_usec(
    notify_socket: socket.socket, engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    running = engine()
    assert await receive(notify_socket) == "READY=1"
    assert await running.stop() == 0
    assert "WATCHDOG=1" not in pending(notify_socket)


def test_the_watchdog_stops_pinging_while_the_scheduler_makes_no_progress(
    notify_socket: socket.socket,
) -> None:
    last_pass = [time.monotonic()]
    watchdog = Watchdog(1.0, lambda: last_pass[0])
    assert watchdog.check()
    assert pending(notify_socket) == ["WATCHDOG=1"]

    last_pass[0] = time.monotonic() - 5  # the scheduler has not passed for 5 s
    with capture_logs() as logs:
        assert not watchdog.check()
        assert not watchdog.check()
    assert pending(notify_socket) == []
    assert [e["event"] for e in logs] == ["watchdog.stalled"]  # said once, not every check

    last_pass[0] = time.monotonic()
    with capture_logs() as logs:
        assert watchdog.check()
    assert pending(notify_socket) == ["WATCHDOG=1"]
    assert [e["event"] for e in logs] == ["watchdog.recovered"]


def test_watchdog_timeout_from_the_environment() -> None:
    me = str(os.getpid())
    assert watchdog_timeout_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": me}) == 30.0
    assert watchdog_timeout_s({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_timeout_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_timeout_s({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_timeout_s({}) is None
