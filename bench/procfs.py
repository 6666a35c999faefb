"""What /proc says: a process's peak RSS and CPU time, the machine's busy and stolen CPU time."""

from __future__ import annotations

import contextlib
import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path


def proc_sample(pid: int) -> tuple[int, float] | None:
    """(peak resident KiB so far, CPU seconds) of a live process; None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    kib = [int(line.split()[1]) for line in status.splitlines() if line[:6] in ("VmHWM:", "VmRSS:")]
    if not kib:  # a zombie: nothing left to measure
        return None
    fields = stat.rpartition(")")[2].split()
    return max(kib), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    sample = proc_sample(pid)
    return math.nan if sample is None else sample[1]


def machine_ticks() -> tuple[int, int, int]:
    """(busy, stolen, total) clock ticks of all CPUs since boot, from /proc/stat."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    return user + nice + system + irq + softirq, steal, sum(ticks)


@dataclass(frozen=True, kw_only=True)
class CpuUse:
    receiver_s: float
    machine_busy: float  # share of all CPUs' time spent busy, by any process
    machine_steal: float  # share taken by the hypervisor: a noisy neighbour


class CpuMeter:
    """CPU used from its creation on, by the receiver process and by the machine as a whole."""

    def __init__(self, receiver_pid: int) -> None:
        self._pid = receiver_pid
        self._receiver_s = cpu_seconds(receiver_pid)
        self._machine = machine_ticks()

    def read(self) -> CpuUse:
        now = machine_ticks()
        busy, steal, total = (n - t for n, t in zip(now, self._machine, strict=True))
        return CpuUse(
            receiver_s=cpu_seconds(self._pid) - self._receiver_s,
            machine_busy=busy / max(total, 1),
            machine_steal=steal / max(total, 1),
        )


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "unknown"
