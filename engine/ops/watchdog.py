"""systemd: state notifications (Type=notify) and the watchdog (WatchdogSec=).

The watchdog ping says more than "the process exists": it is sent only while the scheduler keeps
completing passes (it does at least every poll interval, idle or not), so a delivery loop stuck on
a hung connection or a blocked event loop stops the pings and systemd restarts the service.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping

import structlog

from engine.aio import wait_first

log = structlog.get_logger("engine.watchdog")


def notify(state: str) -> None:
    """Tell systemd (Type=notify) about our state; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.sendall(state.encode())
        except OSError as exc:
            log.warning("daemon.sd_notify_failed", error=str(exc))


def watchdog_timeout_s(env: Mapping[str, str] | None = None) -> float | None:
    """The WatchdogSec= systemd set for this process, or None when there is no watchdog."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (we were started by it)
    return int(usec) / 1_000_000


class Watchdog:
    """Pings every half timeout while `last_progress()` (a time.monotonic() value) is recent."""

    def __init__(self, timeout_s: float, last_progress: Callable[[], float]) -> None:
        self._timeout_s = timeout_s
        self._last_progress = last_progress
        self._stalled = False

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.check()
            await wait_first(stop.wait(), within_s=self._timeout_s / 2)

    def check(self) -> bool:
        """Ping if the scheduler made progress within the timeout; True if it did."""
        idle_s = time.monotonic() - self._last_progress()
        if idle_s < self._timeout_s:
            if self._stalled:
                log.info("watchdog.recovered")
                self._stalled = False
            notify("WATCHDOG=1")
            return True
        if not self._stalled:
            log.error("watchdog.stalled", no_progress_s=round(idle_s, 1), timeout_s=self._timeout_s)
            self._stalled = True
        return False
