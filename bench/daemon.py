"""The daemon under test: the real CLI as a subprocess, its config file and its output."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

from bench.procfs import proc_sample

REPO_ROOT = Path(__file__).resolve().parent.parent
POOL_SIZE = 4
SAMPLE_S = 0.1
STOP_WAIT_S = 30.0  # the daemon's default shutdown grace (20 s) plus margin


def write_config(path: Path, dsn: str, args: argparse.Namespace, *, api_listen: str = "") -> Path:
    """The daemon's config; the API is served only on `api_listen` (host:port) when given."""
    path.write_text(
        "[database]\n"
        f"dsn = {json.dumps(dsn)}\n"
        f"pool_size = {POOL_SIZE}\n"
        f"synchronous_commit = {json.dumps(args.synchronous_commit)}\n\n"
        "[delivery]\n"
        f"concurrency = {args.concurrency}\n"
        f"per_endpoint_concurrency = {args.per_endpoint}\n"
        # The bench receiver is on loopback, which the daemon refuses unless opened.
        'allow_networks = ["127.0.0.0/8", "::1/128"]\n\n'
        # No metrics listener (and no API unless asked for): several bench daemons may run side
        # by side, and nothing scrapes them here (idle, they cost nothing measurable).
        f"[api]\nlisten = {json.dumps(api_listen)}\n\n"
        '[metrics]\nlisten = ""\n',
        encoding="utf-8",
    )
    return path


def _open_log(path: Path) -> IO[bytes]:
    # A plain function: opening a local file is quick, but ruff's ASYNC rules are right that it
    # blocks, and this keeps the blocking call visibly outside the coroutine.
    return path.open("ab")


class Daemon:
    """The real CLI as a subprocess; peak RSS and CPU time are sampled every SAMPLE_S."""

    def __init__(self, proc: asyncio.subprocess.Process, started_at: float) -> None:
        self.proc = proc
        self.started_at = started_at
        self.peak_rss_kib = 0
        self.cpu_s = 0.0
        self._sampler = asyncio.create_task(self._sample(), name="rss-sampler")

    @classmethod
    async def start(cls, config: Path, *, burst: bool, log: Path) -> Daemon:
        argv = [sys.executable, "-m", "engine.cli", "--log-level", "warning", "run"]
        argv += ["--burst", "--config", str(config)] if burst else ["--config", str(config)]
        # WEBHOOK_ENGINE_DSN would override the config file's DSN: never let it.
        env = {k: v for k, v in os.environ.items() if k != "WEBHOOK_ENGINE_DSN"}
        out = _open_log(log)
        try:
            started_at = time.time()
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, cwd=REPO_ROOT
            )
        finally:
            out.close()
        return cls(proc, started_at)

    async def _sample(self) -> None:
        while self.proc.returncode is None:
            sample = proc_sample(self.proc.pid)
            if sample is not None:
                self.peak_rss_kib = max(self.peak_rss_kib, sample[0])
                self.cpu_s = sample[1]
            await asyncio.sleep(SAMPLE_S)

    async def wait(self) -> int:
        code = await self.proc.wait()
        await asyncio.gather(self._sampler, return_exceptions=True)
        return code

    async def stop(self) -> tuple[int, float]:
        """SIGTERM; returns the exit code and the seconds it took to exit."""
        sent_at = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(STOP_WAIT_S):
            code = await self.wait()
        return code, time.monotonic() - sent_at

    async def ensure_gone(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        self._sampler.cancel()
        await asyncio.gather(self._sampler, return_exceptions=True)


@contextlib.asynccontextmanager
async def running_daemon(config: Path, *, burst: bool, log: Path) -> AsyncIterator[Daemon]:
    daemon = await Daemon.start(config, burst=burst, log=log)
    try:
        yield daemon
    finally:
        await daemon.ensure_gone()


def log_summary(path: Path, shown: int = 5) -> list[str]:
    """The daemon's output (warning level and up): a count, then the first few lines."""
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    if not lines:
        return ["daemon output      none (no warnings or errors)"]
    out = [f"daemon output      {len(lines)} line(s) at warning level or above, first {shown}:"]
    return out + [f"  {line[:300]}" for line in lines[:shown]]
