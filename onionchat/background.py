"""CPU-heavy work (password hashing and derivation) in processes of the lowest OS priority.

Hashing on 2 cores with 2 workers took every cycle from the event loop during a login spray:
the honest members' p99 grew nineteen-fold. Under SCHED_IDLE the work gets what the chat
leaves, all of it when the chat is idle. It runs in processes, not threads: a thread that
low holds the GIL for a moment after each hash, and a scheduler that passes it over for
busier work (the machine full) stops the event loop with it, a priority inversion that a
login spray turned into +8–11 % on the honest p99 whatever the hash cost.

The workers are spawned, not forked (the node has threads, which a fork would copy mid-step)
and not served by a fork server (which outlives a killed node, with its workers): each is a
child of the node and leaves as soon as it sees that its parent is gone, however the node
ended.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
LOWEST = 19
ORPHAN_CHECK = 0.5  # seconds between a worker's looks at whether the node is still there


def _init_worker(parent: int) -> None:
    """SCHED_IDLE yields the core the moment anything else wakes; nice 19 alone left it
    waiting for the scheduler's next turn (p99 three times the baseline in a login spray)."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, 0, LOWEST)
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    threading.Thread(target=_leave_with, args=(parent,), daemon=True, name="orphan").start()


def _leave_with(parent: int) -> None:
    """A killed node closes nothing that a worker waits on (each worker holds both ends of
    the task queue), so the worker watches: once it is reparented, its node is gone.
    PR_SET_PDEATHSIG would follow the thread that spawned the worker, not the node."""
    while os.getppid() == parent:
        time.sleep(ORPHAN_CHECK)
    os._exit(0)


class Workers:
    """At most `size` processes of the lowest priority, started when first needed; what
    waits for them is the caller's to bound. `work` and its arguments must pickle."""

    def __init__(self, size: int) -> None:
        self._pool = concurrent.futures.ProcessPoolExecutor(
            size,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(os.getpid(),),
        )

    async def run(self, work: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(work, *args))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
