"""The benches, run as `.venv/bin/python bench/throughput.py` or `bench/backlog.py`."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any


class BenchError(RuntimeError):
    """The bench cannot go on; the message says why."""


def run_main(main: Coroutine[Any, Any, bool]) -> int:
    """Run a bench's async main on the daemon's event loop; its exit code (0: checks passed)."""
    from engine.aio import run_loop

    try:
        passed = run_loop(main)
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench interrupted; subprocesses stopped and database dropped", file=sys.stderr)
        return 130
    return 0 if passed else 1
