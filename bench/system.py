"""What the machine is, and what a process costs: CPU time, resident and peak memory."""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import os
import platform
import socket
import sys
from pathlib import Path
from typing import Any

import psutil


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine(label: str) -> dict[str, Any]:
    """Cores, memory, CPU model, kernel, Python and the versions that matter to the figures."""
    mem = psutil.virtual_memory().total
    limits = _fd_limit()
    return {
        "label": label,
        "hostname": socket.gethostname(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "memory_gib": round(mem / 2**30, 1),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "fd_limit": limits,
        "versions": {
            p: _version(p)
            for p in (
                "onionchat",
                "uvicorn",
                "websockets",
                "starlette",
                "msgspec",
                "uvloop",
                "aiosqlite",
                "psutil",
            )
        },
    }


def _fd_limit() -> int | None:
    try:
        import resource

        return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError):  # pragma: no cover
        return None


def status_kib(pid: int, field: str) -> int | None:
    """A `VmHWM`/`VmRSS`-style field of /proc/PID/status, in KiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def family(pid: int) -> list[int]:
    """`pid` and its children's, theirs included: the node hashes in processes of its own."""
    try:
        return [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return [pid]


class ProcessMeter:
    """CPU seconds (user + system) and memory of a set of processes and of their children,
    measured from outside (a child counts from when it is first seen)."""

    def __init__(self, pids: list[int]) -> None:
        self.procs = [psutil.Process(p) for p in pids]
        self._children: dict[int, psutil.Process] = {}

    def _all(self) -> list[psutil.Process]:
        for p in self.procs:
            with contextlib.suppress(psutil.Error):
                for child in p.children(recursive=True):
                    self._children.setdefault(child.pid, child)
        return self.procs + list(self._children.values())

    def cpu(self) -> float:
        total = 0.0
        for p in self._all():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def cpu_each(self) -> list[float]:
        out = []
        for p in self.procs:
            try:
                t = p.cpu_times()
                out.append(t.user + t.system)
            except psutil.Error:
                out.append(0.0)
        return out

    def rss(self) -> int:
        total = 0
        for p in self._all():
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total

    def hwm(self) -> int:
        """Peak resident memory (VmHWM), bytes, summed."""
        return sum((status_kib(p.pid, "VmHWM") or 0) * 1024 for p in self._all())


def machine_cpu_busy() -> tuple[float, float, float]:
    """(busy, total, stolen) CPU seconds of the whole machine so far, for deltas. Stolen is
    the time a virtual machine's CPUs were runnable but the host ran something else: it
    comes in bursts of milliseconds, and a tail latency measured meanwhile is the host's."""
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    total = sum(t)
    return total - idle, total, getattr(t, "steal", 0.0)
