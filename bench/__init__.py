"""The benches, run as `.venv/bin/python bench/throughput.py` or `bench/backlog.py`."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Coroutine
from typing import Any


class BenchError(RuntimeError):
    """The bench cannot go on; the message says why."""


def run_main(main: Coroutine[Any, Any, bool]) -> int:
    """Run a bench's async main on the daemon's event loop, SIGTERM cancelling it (its cleanup
    still runs); returns the exit code (0: checks passed)."""
    from engine.aio import run_loop

    async def cancellable() -> bool:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await main

    try:
        passed = run_loop(cancellable())
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench interrupted; subprocesses stopped and database dropped", file=sys.stderr)
        return 130
    return 0 if passed else 1
