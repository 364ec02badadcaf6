"""CPU-heavy work (password hashing and derivation) in threads of the lowest OS priority.

Hashing on 2 cores with 2 workers took every cycle from the event loop during a login spray:
the honest members' p99 grew nineteen-fold. At nice 19 the work gets what the chat leaves,
all of it when the chat is idle, and the loop still gets a core when it needs one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
LOWEST = 19


def _lower_priority() -> None:
    """On Linux a thread's scheduling is its own: this lowers only the worker. SCHED_IDLE
    yields the core the moment the event loop wakes; nice 19 alone left it waiting for the
    scheduler's next turn (p99 three times the baseline in a login spray)."""
    tid = threading.get_native_id()
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, tid, LOWEST)
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))


class Workers:
    """`size` threads of low priority; what waits for them is the caller's to bound."""

    def __init__(self, size: int, name: str) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(
            size, thread_name_prefix=name, initializer=_lower_priority
        )

    async def run(self, work: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(work, *args))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
