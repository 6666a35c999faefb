"""/healthz and /readyz: is the process with its loops alive, and can it deliver right now."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from engine.db.ops import OpsReader
from engine.db.store import DB_ERRORS

# A readiness probe must answer quickly even when Postgres does not.
PING_TIMEOUT_S = 2.0


@dataclass(frozen=True, kw_only=True, slots=True)
class Check:
    ok: bool
    detail: dict[str, Any] = field(default_factory=dict)


class Health:
    def __init__(self, reader: OpsReader, listener_connected: Callable[[], bool]) -> None:
        self._reader = reader
        self._listener_connected = listener_connected
        self._tasks: list[asyncio.Task[Any]] = []

    def watch(self, tasks: Iterable[asyncio.Task[Any]]) -> None:
        """The daemon's named tasks (scheduler, recorder, side loops)."""
        self._tasks = list(tasks)

    def liveness(self) -> Check:
        """Alive when every loop is still running (the event loop answering is the rest)."""
        loops = {task.get_name(): "stopped" if task.done() else "running" for task in self._tasks}
        ok = bool(loops) and all(state == "running" for state in loops.values())
        return Check(ok=ok, detail={"loops": loops})

    async def readiness(self) -> Check:
        """Ready when the database answers and the LISTEN connection is up."""
        try:
            await self._reader.ping(PING_TIMEOUT_S)
            database = "connected"
        except DB_ERRORS as exc:
            database = f"unreachable: {type(exc).__name__}"
        listener = "connected" if self._listener_connected() else "disconnected"
        ok = database == "connected" and listener == "connected"
        return Check(ok=ok, detail={"database": database, "listener": listener})
