"""Run the real CLI as a subprocess and follow its JSON log lines."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import Any

from tests.settings import test_settings


def write_config(path: Path, dsn: str, **sections: dict[str, Any]) -> Path:
    """The test settings (tests/settings.py) as a TOML file; sections override."""
    raw = test_settings(dsn, **sections)
    lines: list[str] = []
    for name, values in raw.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class DaemonProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        self.raw_lines: list[str] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, *args: str, env: dict[str, str] | None = None) -> DaemonProcess:
        """`webhook-engine *args`; `env` replaces the environment when given."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "engine.cli",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.raw_lines.append(line)
            with contextlib.suppress(ValueError):  # not every line is JSON (tracebacks)
                self.events.append(json.loads(line))
            self._changed.set()

    def count(self, event: str) -> int:
        return sum(1 for e in self.events if e.get("event") == event)

    async def wait_for_event(self, event: str, within_s: float = 15.0) -> None:
        async def _wait() -> None:
            while not self.count(event):
                if self.proc.returncode is not None and self._reader.done():
                    raise AssertionError(f"daemon exited before {event}: {self.output()}")
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(_wait(), within_s)
        except TimeoutError:
            raise AssertionError(f"no {event} within {within_s}s: {self.output()}") from None

    async def stop(self, sig: signal.Signals = signal.SIGTERM, within_s: float = 30.0) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), within_s)
        await asyncio.wait_for(self._reader, within_s)
        return code

    def output(self) -> str:
        return "\n".join(self.raw_lines[-40:])
