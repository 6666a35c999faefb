"""Small asyncio helpers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable


async def wait_first(*awaitables: Awaitable[object], within_s: float | None = None) -> None:
    """Wait until one of `awaitables` completes or `within_s` seconds pass; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(tasks, timeout=within_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
